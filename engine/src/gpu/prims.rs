//! GPU primitives (to come).
