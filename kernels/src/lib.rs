//! TEMPORARY stand-in while the emulator is built on the `emu` branch (same API).

#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    pub name: &'static str,
    pub source: &'static str,
    pub kernels: &'static [&'static str],
}
pub const SOURCES: &[KernelSource] = &[];
pub const TEST_SOURCES: &[KernelSource] = &[];
pub const HEADERS: &[(&str, &str)] = &[];
pub fn find_source(kernel: &str) -> Option<&'static KernelSource> {
    SOURCES.iter().chain(TEST_SOURCES).find(|s| s.kernels.contains(&kernel))
}

pub mod emu {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Modes {
        pub shuffle: bool,
        pub guard: bool,
        pub seed: u64,
    }
    impl Modes {
        pub const FAST: Modes = Modes { shuffle: false, guard: false, seed: 0 };
        pub const CHECKED: Modes = Modes { shuffle: true, guard: true, seed: 0 };
        pub fn from_env() -> Modes {
            Modes::CHECKED
        }
    }
    pub struct Buffer {
        v: Vec<u8>,
    }
    impl Buffer {
        pub fn as_ptr(&self) -> *mut u8 {
            self.v.as_ptr() as *mut u8
        }
        pub fn len(&self) -> usize {
            self.v.len()
        }
        pub fn is_empty(&self) -> bool {
            self.v.is_empty()
        }
        pub fn is_guarded(&self) -> bool {
            false
        }
    }
    #[derive(Debug, Clone)]
    pub enum EmuError {
        Stub,
    }
    impl std::fmt::Display for EmuError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stub")
        }
    }
    impl std::error::Error for EmuError {}
    pub fn alloc(bytes: usize, _guard: bool) -> Result<Buffer, EmuError> {
        Ok(Buffer { v: vec![0; bytes] })
    }
    /// # Safety
    /// stub
    pub unsafe fn launch(
        _kernel: &str,
        _grid: [u32; 3],
        _block: [u32; 3],
        _shared_bytes: u32,
        _args: &[&[u8]],
        _modes: &Modes,
    ) -> Result<(), EmuError> {
        Err(EmuError::Stub)
    }
    pub fn kernel_names() -> Vec<&'static str> {
        vec![]
    }
}
