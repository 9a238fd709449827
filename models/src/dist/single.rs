//! The world of one: every collective is the identity (the default, and what a run without a
//! launcher gets).

use super::{Collectives, ReduceOp};
use crate::{Error, Result};

/// A single process: rank 0 of 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

fn root_zero(root: usize) -> Result<()> {
    match root {
        0 => Ok(()),
        r => Err(Error::Msg(format!("broadcast from rank {r} in a world of one rank"))),
    }
}

impl Collectives for Single {
    fn backend(&self) -> &'static str {
        "single"
    }
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce(&self, _buf: &mut [f32], _op: ReduceOp) -> Result<()> {
        // Sum and mean over one rank leave the buffer as it is.
        Ok(())
    }
    fn broadcast(&self, _buf: &mut [f32], root: usize) -> Result<()> {
        root_zero(root)
    }
    fn broadcast_bytes(&self, _buf: &mut [u8], root: usize) -> Result<()> {
        root_zero(root)
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}
