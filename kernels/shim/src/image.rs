//! What `cuModuleLoadData` learns from a GPU image, as the driver does: the entry points, each
//! one's parameter sizes, its `__launch_bounds__` and its static shared memory, and the
//! architecture the image targets. Two formats arrive from NVRTC:
//! - a **CUBIN** (an ELF for `EM_CUDA`): entries are the symbol table's functions marked as
//!   CUDA entries; `.nv.info.<kernel>` holds attribute records (`EIATTR_KPARAM_INFO` per parameter
//!   with its offset and size, `EIATTR_MAX_THREADS` from `__launch_bounds__`); `.nv.shared.<kernel>`
//!   is the static shared memory; `e_flags` bits 8–15 are the SM version;
//! - **PTX** text: `.version`, `.target`, each `.entry NAME( .param … )` with `.maxntid`, and
//!   the `.shared` arrays it declares or references.
//!
//! The attribute encoding is not documented by NVIDIA; the layout used here was read off NVRTC
//! 13.0's output for a kernel with known parameters (`tests/images/`, checked by the tests below).

use std::collections::BTreeMap;

/// Facts about one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// (offset, size) of each parameter in the parameter buffer, in order.
    pub params: Vec<(usize, usize)>,
    /// `__launch_bounds__` / `.maxntid` (x, y, z), if declared.
    pub max_threads: Option<[u32; 3]>,
    /// Static shared memory, bytes (without the per-block reserved kilobyte).
    pub static_shared: u32,
    /// Registers per thread, where the image says (CUBIN only).
    pub registers: Option<u32>,
}

impl Entry {
    /// The most threads a block of this kernel may have.
    pub fn max_block_threads(&self) -> Option<u64> {
        self.max_threads.map(|[x, y, z]| x.max(1) as u64 * y.max(1) as u64 * z.max(1) as u64)
    }
}

/// The format of an image and what it targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Machine code for exactly this SM (e.g. 90 for sm_90).
    Cubin { sm: u32 },
    /// PTX of ISA `version`, for `.target sm_<target>` and newer.
    Ptx { version: (u32, u32), target: u32 },
}

/// A parsed module image.
#[derive(Debug, Clone)]
pub struct Image {
    pub format: Format,
    pub entries: BTreeMap<String, Entry>,
}

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const EM_CUDA: u16 = 190;
const SHT_SYMTAB: u32 = 2;
const SHT_NOBITS: u32 = 8;
const STT_FUNC: u8 = 2;
const STO_CUDA_ENTRY: u8 = 0x10;
const EIFMT_SVAL: u8 = 0x04;
const EIATTR_MAX_THREADS: u8 = 0x05;
const EIATTR_REQNTID: u8 = 0x10;
const EIATTR_KPARAM_INFO: u8 = 0x17;
const EIATTR_REGCOUNT: u8 = 0x2f;
/// The most an image may claim to be, so a corrupt header cannot make us read gigabytes.
const MAX_IMAGE: u64 = 1 << 30;

/// Reads an image from a pointer without a length, as `cuModuleLoadData` must: an ELF's extent
/// follows from its headers, PTX ends at its NUL.
///
/// # Safety
/// `ptr` must point to a complete CUBIN or a NUL-terminated PTX text.
pub unsafe fn read(ptr: *const u8) -> Result<Image, String> {
    if ptr.is_null() {
        return Err("null image".into());
    }
    // SAFETY: every image is at least 4 bytes (an ELF header or a PTX text and its NUL), and
    // a shorter PTX text ends at its NUL, which is checked first.
    let head = unsafe { std::slice::from_raw_parts(ptr, 4) };
    if head[..head.iter().position(|&b| b == 0).unwrap_or(4)] != ELF_MAGIC[..] {
        // SAFETY: the caller promises a NUL-terminated text.
        let text = unsafe { std::ffi::CStr::from_ptr(ptr.cast()) };
        return parse_ptx(&String::from_utf8_lossy(text.to_bytes()));
    }
    // SAFETY: an ELF64 header is 64 bytes.
    let header = unsafe { std::slice::from_raw_parts(ptr, 64) };
    let shoff = u64_at(header, 40)?;
    let (shentsize, shnum) = (u16_at(header, 58)? as u64, u16_at(header, 60)? as u64);
    let table_end = shoff.checked_add(shentsize * shnum).filter(|&e| e <= MAX_IMAGE).ok_or("bad section table")?;
    // SAFETY: the section table lies inside the image (the ELF's own promise).
    let table = unsafe { std::slice::from_raw_parts(ptr, table_end as usize) };
    let mut end = table_end;
    for i in 0..shnum {
        let sh = (shoff + i * shentsize) as usize;
        if u32_at(table, sh + 4)? != SHT_NOBITS {
            let stop = u64_at(table, sh + 24)?.checked_add(u64_at(table, sh + 32)?).ok_or("bad section")?;
            end = end.max(stop);
        }
    }
    if end > MAX_IMAGE {
        return Err(format!("the ELF claims {end} bytes"));
    }
    // SAFETY: every section lies inside the image.
    parse_cubin(unsafe { std::slice::from_raw_parts(ptr, end as usize) })
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]])).ok_or_else(|| format!("truncated at {at}"))
}
fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes(s.try_into().unwrap())).ok_or_else(|| format!("truncated at {at}"))
}
fn u64_at(b: &[u8], at: usize) -> Result<u64, String> {
    b.get(at..at + 8).map(|s| u64::from_le_bytes(s.try_into().unwrap())).ok_or_else(|| format!("truncated at {at}"))
}

struct Section<'a> {
    name: String,
    kind: u32,
    size: u64,
    data: &'a [u8],
    link: u32,
}

/// Parses a CUBIN.
pub fn parse_cubin(elf: &[u8]) -> Result<Image, String> {
    if elf.len() < 64 || &elf[..4] != ELF_MAGIC || elf[4] != 2 {
        return Err("not a 64-bit ELF".into());
    }
    if u16_at(elf, 18)? != EM_CUDA {
        return Err(format!("ELF machine {} is not EM_CUDA ({EM_CUDA})", u16_at(elf, 18)?));
    }
    let sm = (u32_at(elf, 48)? >> 8) & 0xff;
    let shoff = u64_at(elf, 40)? as usize;
    let (shentsize, shnum, shstrndx) =
        (u16_at(elf, 58)? as usize, u16_at(elf, 60)? as usize, u16_at(elf, 62)? as usize);
    let mut raw = Vec::with_capacity(shnum);
    for i in 0..shnum {
        let sh = shoff + i * shentsize;
        let (kind, off, size) = (u32_at(elf, sh + 4)?, u64_at(elf, sh + 24)? as usize, u64_at(elf, sh + 32)?);
        let data = if kind == SHT_NOBITS {
            &[][..]
        } else {
            elf.get(off..off.checked_add(size as usize).ok_or("bad section size")?).ok_or("section past the end")?
        };
        raw.push((u32_at(elf, sh)?, kind, size, data, u32_at(elf, sh + 40)?));
    }
    let strtab = raw.get(shstrndx).map(|r| r.3).ok_or("no section name table")?;
    let name_at = |tab: &[u8], at: usize| -> String {
        let s = tab.get(at..).unwrap_or(&[]);
        String::from_utf8_lossy(&s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())]).into_owned()
    };
    let sections: Vec<Section> = raw
        .iter()
        .map(|&(n, kind, size, data, link)| Section { name: name_at(strtab, n as usize), kind, size, data, link })
        .collect();

    // Entry points from the symbol table; symbol indices for the per-kernel register counts.
    let symtab = sections.iter().find(|s| s.kind == SHT_SYMTAB).ok_or("no symbol table")?;
    let symstr = sections.get(symtab.link as usize).ok_or("no symbol string table")?.data;
    let mut by_index = BTreeMap::new();
    let mut entries = BTreeMap::new();
    for (i, sym) in symtab.data.chunks_exact(24).enumerate() {
        let (info, other) = (sym[4], sym[5]);
        if info & 0xf == STT_FUNC && other & STO_CUDA_ENTRY != 0 {
            let name = name_at(symstr, u32_at(sym, 0)? as usize);
            by_index.insert(i as u32, name.clone());
            entries.insert(name, Entry { params: Vec::new(), max_threads: None, static_shared: 0, registers: None });
        }
    }
    for (name, entry) in entries.iter_mut() {
        if let Some(info) = sections.iter().find(|s| s.name == format!(".nv.info.{name}")) {
            read_kernel_info(info.data, entry).map_err(|e| format!(".nv.info.{name}: {e}"))?;
        }
        if let Some(shared) = sections.iter().find(|s| s.name == format!(".nv.shared.{name}")) {
            let reserved = if sm >= 90 { crate::config::RESERVED_SHARED as u64 } else { 0 };
            entry.static_shared = shared.size.saturating_sub(reserved) as u32;
        }
    }
    if let Some(info) = sections.iter().find(|s| s.name == ".nv.info") {
        for (attr, payload) in records(info.data)? {
            if attr == EIATTR_REGCOUNT && payload.len() >= 8 {
                if let Some(e) = by_index.get(&u32_at(payload, 0)?).and_then(|n| entries.get_mut(n)) {
                    e.registers = Some(u32_at(payload, 4)?);
                }
            }
        }
    }
    Ok(Image { format: Format::Cubin { sm }, entries })
}

/// The attribute records of a `.nv.info` section: (attribute, payload); only records with a
/// payload (format `EIFMT_SVAL`) carry data we read.
fn records(mut data: &[u8]) -> Result<Vec<(u8, &[u8])>, String> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let (fmt, attr, value) = (data[0], data[1], u16_at(data, 2)? as usize);
        if fmt == EIFMT_SVAL {
            let payload = data.get(4..4 + value).ok_or("attribute record past the end")?;
            out.push((attr, payload));
            data = &data[4 + value..];
        } else {
            data = &data[4..];
        }
    }
    Ok(out)
}

fn read_kernel_info(data: &[u8], entry: &mut Entry) -> Result<(), String> {
    let mut params = BTreeMap::new();
    for (attr, p) in records(data)? {
        match attr {
            EIATTR_KPARAM_INFO if p.len() >= 12 => {
                // u32 index, u16 ordinal, u16 offset, u32 flags whose bits 18..31 are the size.
                let (ordinal, offset, flags) = (u16_at(p, 4)? as usize, u16_at(p, 6)? as usize, u32_at(p, 8)?);
                params.insert(ordinal, (offset, ((flags >> 18) & 0x3fff) as usize));
            }
            EIATTR_MAX_THREADS | EIATTR_REQNTID if p.len() >= 12 => {
                entry.max_threads = Some([u32_at(p, 0)?, u32_at(p, 4)?, u32_at(p, 8)?]);
            }
            _ => {}
        }
    }
    if params.keys().enumerate().any(|(i, &k)| i != k) {
        return Err(format!("parameter ordinals {:?} are not 0..n", params.keys().collect::<Vec<_>>()));
    }
    entry.params = params.into_values().collect();
    Ok(())
}

/// Parses a PTX module.
pub fn parse_ptx(text: &str) -> Result<Image, String> {
    let directive =
        |name: &str| text.lines().map(str::trim).find_map(|l| l.strip_prefix(name).map(|r| r.trim().to_string()));
    let version = directive(".version").ok_or("PTX without .version")?;
    let (major, minor) = version.split_once('.').ok_or_else(|| format!("bad .version {version}"))?;
    let version = (major.parse().map_err(|_| "bad .version")?, minor.parse().map_err(|_| "bad .version")?);
    let target = directive(".target").ok_or("PTX without .target")?;
    let target: u32 = target
        .trim_start_matches("sm_")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .map_err(|_| format!("bad .target {target}"))?;

    // Module-scope .shared arrays (function-scope ones are counted where they are declared).
    let module_shared = shared_decls(&text[..text.find(".entry").unwrap_or(text.len())]);
    let mut entries = BTreeMap::new();
    let mut rest = text;
    while let Some(at) = rest.find(".entry ") {
        rest = &rest[at + ".entry ".len()..];
        let name: String = rest.trim_start().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let open = rest.find('(').ok_or_else(|| format!("{name}: no parameter list"))?;
        let close = rest.find(')').ok_or_else(|| format!("{name}: unterminated parameter list"))?;
        let mut params = Vec::new();
        let mut offset = 0usize;
        for p in rest[open + 1..close].split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (size, align) = param_size(p).ok_or_else(|| format!("{name}: cannot read parameter `{p}`"))?;
            offset = offset.div_ceil(align) * align;
            params.push((offset, size));
            offset += size;
        }
        let body_start = rest.find('{').ok_or_else(|| format!("{name}: no body"))?;
        let attrs = &rest[close + 1..body_start];
        let max_threads = attrs.lines().map(str::trim).find_map(|l| {
            let v = l.strip_prefix(".maxntid").or_else(|| l.strip_prefix(".reqntid"))?;
            let n: Vec<u32> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
            Some([n.first().copied().unwrap_or(1), n.get(1).copied().unwrap_or(1), n.get(2).copied().unwrap_or(1)])
        });
        let body = &rest[body_start..body_end(&rest[body_start..]).map_or(rest.len(), |e| body_start + e)];
        let own: u64 = shared_decls(body).iter().map(|(_, s)| s).sum();
        let used: u64 = module_shared.iter().filter(|(n, _)| body.contains(n.as_str())).map(|(_, s)| s).sum();
        entries.insert(name, Entry { params, max_threads, static_shared: (own + used) as u32, registers: None });
        rest = &rest[body_start..];
    }
    Ok(Image { format: Format::Ptx { version, target }, entries })
}

/// The bytes and alignment of one `.param` declaration, e.g. `.param .align 8 .b8 k_param_2[32]`
/// or `.param .u64 .ptr .global .align 1 k_param_0`.
fn param_size(decl: &str) -> Option<(usize, usize)> {
    let words: Vec<&str> = decl.split_whitespace().collect();
    let unit = words.iter().find_map(|w| match *w {
        ".u8" | ".s8" | ".b8" => Some(1),
        ".u16" | ".s16" | ".b16" | ".f16" => Some(2),
        ".u32" | ".s32" | ".b32" | ".f32" => Some(4),
        ".u64" | ".s64" | ".b64" | ".f64" => Some(8),
        _ => None,
    })?;
    let count = match words.last()?.split_once('[') {
        Some((_, n)) => n.trim_end_matches(']').parse().ok()?,
        None => 1,
    };
    // `.align N` right after `.param` is the parameter's own alignment; a later one (after
    // `.ptr`) is the pointee's.
    let align = match words.get(1..3) {
        Some([".align", n]) => n.parse().ok()?,
        _ => unit,
    };
    Some((unit * count, align))
}

/// The length up to and including the `}` that closes the `{` at the start of `body`.
fn body_end(body: &str) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// `(name, bytes)` of each non-extern `.shared` array declared in `text`.
fn shared_decls(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with(".shared") || l.starts_with(".visible .shared") || l.starts_with(".global .shared"))
        .filter_map(|l| {
            let decl = l.trim_end_matches(';');
            let (size, _) = param_size(&format!(".param {}", decl.split_once(".shared")?.1.trim()))?;
            let name = decl.split_whitespace().last()?.split('[').next()?.to_string();
            Some((name, size as u64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // tests/images/make_images.py compiled this kernel with NVRTC 13.0 for sm_90, sm_80 and
    // compute_90:
    //   struct S { long long a; int b; float c[5]; };   // 32 bytes, 8-aligned
    //   __launch_bounds__(256) kern(float* p, int n, S s, double d, char c) { __shared__ float tile[300]; … }
    //   plain(unsigned long long* q) { extern __shared__ int dyn[]; … }
    const K90: &[u8] = include_bytes!("../tests/images/k90.cubin");
    const K80: &[u8] = include_bytes!("../tests/images/k80.cubin");
    const PTX: &[u8] = include_bytes!("../tests/images/k90.ptx");
    const KERN_PARAMS: [(usize, usize); 5] = [(0, 8), (8, 4), (16, 32), (48, 8), (56, 1)];

    fn check(img: &Image) {
        let kern = &img.entries["kern"];
        assert_eq!(kern.params, KERN_PARAMS);
        assert_eq!(kern.max_threads, Some([256, 1, 1]));
        assert_eq!(kern.max_block_threads(), Some(256));
        assert_eq!(kern.static_shared, 1200);
        let plain = &img.entries["plain"];
        assert_eq!(plain.params, [(0, 8)]);
        assert_eq!(plain.max_threads, None);
        assert_eq!(plain.static_shared, 0);
        assert_eq!(img.entries.len(), 2);
    }

    #[test]
    fn cubins_give_entries_parameters_bounds_shared_memory_and_the_sm() {
        for (bytes, sm) in [(K90, 90), (K80, 80)] {
            let img = parse_cubin(bytes).unwrap();
            assert_eq!(img.format, Format::Cubin { sm });
            check(&img);
            assert!(img.entries["kern"].registers.is_some_and(|r| r > 0 && r <= 255));
            // From a bare pointer, as cuModuleLoadData gets it: the extent comes from the headers.
            // SAFETY: a complete CUBIN.
            let again = unsafe { read(bytes.as_ptr()) }.unwrap();
            assert_eq!(again.entries, img.entries);
        }
    }

    #[test]
    fn ptx_gives_the_same_facts_and_its_isa_version() {
        let img = parse_ptx(std::str::from_utf8(PTX).unwrap().trim_end_matches('\0')).unwrap();
        assert_eq!(img.format, Format::Ptx { version: (9, 0), target: 90 });
        check(&img);
        // SAFETY: the fixture ends with NUL, as NVRTC's PTX does.
        assert_eq!(unsafe { read(PTX.as_ptr()) }.unwrap().entries, img.entries);
    }

    #[test]
    fn damaged_images_are_errors_not_panics() {
        for cut in [3, 64, 200, 1000, K90.len() - 1] {
            let _ = parse_cubin(&K90[..cut]); // any result but a panic
        }
        let mut bad = K90.to_vec();
        bad[18] = 3; // EM_386
        assert!(parse_cubin(&bad).unwrap_err().contains("EM_CUDA"));
        assert!(parse_ptx("garbage").is_err());
        assert!(parse_ptx(".version 9.0\n.target sm_90\n.entry k(\n.param .u64 a").is_err());
    }
}
