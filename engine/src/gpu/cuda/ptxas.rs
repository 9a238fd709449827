//! Reading ptxas's `-v` report from an NVRTC log: registers, shared memory, stack frame and
//! spills per function. The kernel build check fails on spills with it, and the docs print its
//! table; a report is parsed rather than queried from a loaded module because the check runs on
//! machines without a GPU.

/// What ptxas reports for one function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionReport {
    pub name: String,
    /// An `extern "C" __global__` entry point (otherwise a device function ptxas did not inline).
    pub entry: bool,
    pub registers: u32,
    /// Static shared memory, bytes (dynamic shared memory is chosen at launch).
    pub smem: u32,
    pub stack_frame: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
}

impl FunctionReport {
    pub fn spills(&self) -> bool {
        self.spill_stores > 0 || self.spill_loads > 0
    }
}

/// The number right before `unit` in `text` (`"24 registers"` → 24).
fn number_before(text: &str, unit: &str) -> Option<u32> {
    let end = text.find(unit)?;
    text[..end].trim_end().rsplit([' ', ',', ':']).next()?.parse().ok()
}

/// Every function the report mentions, in order of appearance.
pub fn parse(log: &str) -> Vec<FunctionReport> {
    let mut out: Vec<FunctionReport> = Vec::new();
    let mut current: Option<usize> = None;
    let index_of = |out: &mut Vec<FunctionReport>, name: &str| match out.iter().position(|f| f.name == name) {
        Some(i) => i,
        None => {
            out.push(FunctionReport { name: name.to_string(), ..Default::default() });
            out.len() - 1
        }
    };
    for line in log.lines() {
        let line = line.trim();
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default();
            let i = index_of(&mut out, name);
            out[i].entry = true;
            current = Some(i);
        } else if let Some(rest) = line.split("Function properties for ").nth(1) {
            current = Some(index_of(&mut out, rest.trim()));
        } else if line.contains("bytes stack frame") {
            if let Some(f) = current.map(|i| &mut out[i]) {
                f.stack_frame = number_before(line, "bytes stack frame").unwrap_or(0);
                f.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
                f.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
            }
        } else if line.contains("Used ") && line.contains(" registers") {
            if let Some(f) = current.map(|i| &mut out[i]) {
                f.registers = number_before(line, " registers").unwrap_or(0);
                f.smem = number_before(line, " bytes smem").unwrap_or(0);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_entries_spills_and_device_functions() {
        let log = "\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'add_f32' for 'sm_90'
ptxas info    : Function properties for add_f32
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 10 registers, used 0 barriers, 368 bytes cmem[0]
ptxas info    : Function properties for helper
    16 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Compiling entry function 'big' for 'sm_90'
ptxas info    : Function properties for big
    400 bytes stack frame, 380 bytes spill stores, 372 bytes spill loads
ptxas info    : Used 32 registers, used 1 barriers, 4096 bytes smem, 368 bytes cmem[0]
";
        let r = parse(log);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0], FunctionReport { name: "add_f32".into(), entry: true, registers: 10, ..Default::default() });
        assert!(!r[1].entry && r[1].stack_frame == 16 && !r[1].spills());
        assert_eq!((r[2].registers, r[2].smem, r[2].spill_stores, r[2].spill_loads), (32, 4096, 380, 372));
        assert!(r[2].spills());
    }
}
