//! `StateDict`: named tensors in a fixed order — what a weight file holds and what a model's
//! parameters are called. Names follow timm's `state_dict` (e.g. `stages.0.blocks.0.conv1.weight`);
//! conversion from the original BiT `.npz` names happens when the file is read.

use std::collections::{BTreeMap, HashMap};

use bitgrad_engine::Tensor;

/// Ordered `name → tensor` map with string metadata (safetensors' `__metadata__`).
#[derive(Clone, Default)]
pub struct StateDict {
    entries: Vec<(String, Tensor)>,
    index: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
}

impl StateDict {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces `name`; a new name goes to the end, a replaced one keeps its place.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        let name = name.into();
        match self.index.get(&name) {
            Some(&i) => self.entries[i].1 = tensor,
            None => {
                self.index.insert(name.clone(), self.entries.len());
                self.entries.push((name, tensor));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.index.get(name).map(|&i| &self.entries[i].1)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Removes `name`, keeping the order of the rest.
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        let i = self.index.remove(name)?;
        let (_, t) = self.entries.remove(i);
        for v in self.index.values_mut() {
            if *v > i {
                *v -= 1;
            }
        }
        Some(t)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Total number of elements over all tensors.
    pub fn numel(&self) -> usize {
        self.entries.iter().map(|(_, t)| t.numel()).sum()
    }

    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    pub fn metadata_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.metadata
    }
}

impl std::fmt::Debug for StateDict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (n, t) in &self.entries {
            m.entry(n, &format_args!("{:?} {:?}", t.dtype(), t.dims()));
        }
        m.finish()
    }
}

impl FromIterator<(String, Tensor)> for StateDict {
    fn from_iter<I: IntoIterator<Item = (String, Tensor)>>(iter: I) -> Self {
        let mut sd = StateDict::new();
        for (n, t) in iter {
            sd.insert(n, t);
        }
        sd
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitgrad_engine::Device;

    fn t(v: f32) -> Tensor {
        Tensor::from_vec(vec![v], [1], Device::Cpu).unwrap()
    }

    #[test]
    fn order_replace_remove() {
        let mut sd = StateDict::new();
        sd.insert("b", t(1.0));
        sd.insert("a", t(2.0));
        sd.insert("c", t(3.0));
        sd.insert("a", t(4.0));
        assert_eq!(sd.names().collect::<Vec<_>>(), ["b", "a", "c"]);
        assert_eq!(sd.get("a").unwrap().to_vec::<f32>().unwrap(), [4.0]);
        assert_eq!(sd.remove("b").unwrap().to_vec::<f32>().unwrap(), [1.0]);
        assert_eq!(sd.names().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(sd.get("c").unwrap().to_vec::<f32>().unwrap(), [3.0]);
        assert!(sd.remove("zz").is_none());
        assert_eq!(sd.len(), 2);
        assert_eq!(sd.numel(), 2);
    }
}
