//! Ranks must train the same thing. Before the first step every rank hashes what it was given
//! — each HyperRule value, the seed, the architecture, the training and validation data (size,
//! classes, every label), the starting weights (and momentum on a resume) — and rank 0's hashes
//! are broadcast; every rank compares, and the mismatches are summed over the ranks, so all of
//! them stop together with the same message naming what differs. The same comparison of the
//! weights and momentum at each checkpoint proves the ranks are still identical (the file rank 0
//! writes is every rank's state).

use bitgrad_engine::Tensor;

use super::{Collectives, ReduceOp};
use crate::{Error, Result};

/// A 64-bit FNV-1a hash, fed incrementally (not cryptographic: it detects accidents, such as a
/// rank given another file, not attacks).
#[derive(Debug, Clone, Copy)]
pub struct Hasher(u64);

impl Default for Hasher {
    fn default() -> Self {
        Hasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher {
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        // Length first, so that ("ab", "c") and ("a", "bc") differ.
        for x in (b.len() as u64).to_le_bytes().iter().chain(b) {
            self.0 = (self.0 ^ *x as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    /// A tensor's name, shape, dtype and values (copied to the host).
    pub fn tensor(&mut self, name: &str, t: &Tensor) -> Result<&mut Self> {
        self.str(name).str(&format!("{} {}", t.shape(), t.dtype()));
        let v = t.to_vec::<f32>()?;
        Ok(self.bytes(bytemuck::cast_slice(&v)))
    }
    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// Compares `items` (what, hash) with rank 0's; every rank returns the same result: `Ok` when all
/// ranks agree, else an error naming each item that differs and on how many ranks. `when` says
/// at which point ("at the start", "after step 40").
pub fn agree(comm: &dyn Collectives, when: &str, items: &[(String, u64)]) -> Result<()> {
    let mut bytes: Vec<u8> = items.iter().flat_map(|(_, h)| h.to_le_bytes()).collect();
    let mine = bytes.clone();
    comm.broadcast_bytes(&mut bytes, 0)?;
    let mut differ: Vec<f32> = mine.chunks(8).zip(bytes.chunks(8)).map(|(a, b)| (a != b) as u8 as f32).collect();
    comm.all_reduce(&mut differ, ReduceOp::Sum)?;
    let bad: Vec<String> = items
        .iter()
        .zip(&differ)
        .filter(|(_, &n)| n > 0.0)
        .map(|((what, _), &n)| format!("{what} ({} of {} ranks differ from rank 0)", n as usize, comm.world_size()))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    let differs = mine != bytes;
    let me = match comm.rank() {
        0 => "this is rank 0".to_string(),
        r if differs => format!("this is rank {r}, which differs"),
        r => format!("this is rank {r}, which agrees with rank 0"),
    };
    Err(Error::Config(format!(
        "the {} ranks do not train the same run {when}: {}; every rank must be given the same arguments, data \
         and weights ({me})",
        comm.world_size(),
        bad.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::Single;

    #[test]
    fn hashes_separate_fields_and_one_rank_agrees() {
        let h = |parts: &[&str]| {
            let mut x = Hasher::default();
            parts.iter().for_each(|p| {
                x.str(p);
            });
            x.finish()
        };
        assert_ne!(h(&["ab", "c"]), h(&["a", "bc"]));
        assert_eq!(h(&["ab"]), h(&["ab"]));
        agree(&Single, "at the start", &[("seed".into(), 1)]).unwrap();
    }
}
