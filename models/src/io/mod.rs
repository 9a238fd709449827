//! Weight I/O: timm safetensors and the original BiT `.npz`, both read into a [`StateDict`]
//! under timm's names in OIHW layout.

mod state_dict;

pub use state_dict::StateDict;
