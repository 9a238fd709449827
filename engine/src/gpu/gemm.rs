//! CPU GEMM with cuBLAS semantics (to come).
