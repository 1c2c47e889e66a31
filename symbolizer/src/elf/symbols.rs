//! The symbol index: function symbols of `.symtab` and `.dynsym`, sorted by address, with their
//! names left in the file they come from; Rust and C++ demangling.

use std::borrow::Cow;

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

/// Most symbols indexed per file: bounds memory on hostile inputs (real binaries have far fewer).
const MAX_SYMBOLS: usize = 8 << 20;

/// Which file's symbol table was indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SymbolSource {
    Binary,
    DebugFile,
    MiniDebugInfo,
}

/// One function symbol; its name stays in the mapped file.
#[derive(Debug, Clone, Copy)]
struct Sym {
    start: u64,
    end: u64,
    name_off: u32,
    name_len: u32,
}

/// Function symbols of one file, sorted by address; the names are read from that file's bytes
/// on lookup ([`Self::name_at`]).
#[derive(Debug)]
pub(super) struct SymbolIndex {
    symbols: Vec<Sym>,
    source: SymbolSource,
}

impl SymbolIndex {
    /// Function symbols of `.symtab` and `.dynsym` of `obj` (parsed from `data`), sorted,
    /// deduplicated, with sizes: a symbol without a size reaches to the next symbol, never past
    /// the end of its section.
    pub(super) fn build(obj: &object::File<'_>, data: &[u8], source: SymbolSource) -> Self {
        SymbolIndex {
            symbols: index_symbols(obj, data),
            source,
        }
    }

    /// Which file the names are in.
    pub(super) fn source(&self) -> SymbolSource {
        self.source
    }

    pub(super) fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.symbols.len()
    }

    /// Heap bytes of the index.
    pub(super) fn heap_bytes(&self) -> usize {
        self.symbols.capacity() * std::mem::size_of::<Sym>()
    }

    /// The name of the symbol covering `va`, read from `names` (the bytes of the file the index
    /// was built from); invalid UTF-8 replaced, names come from untrusted files.
    pub(super) fn name_at<'a>(&self, va: u64, names: &'a [u8]) -> Option<Cow<'a, str>> {
        let i = self.symbols.partition_point(|s| s.start <= va);
        let s = self.symbols.get(i.checked_sub(1)?)?;
        if va >= s.end {
            return None;
        }
        let start = s.name_off as usize;
        let bytes = names.get(start..start.checked_add(s.name_len as usize)?)?;
        Some(String::from_utf8_lossy(bytes))
    }
}

/// Whether a symbol is defined in an executable section (`SHF_EXECINSTR`; in a separate debug
/// file the section keeps its flags though its contents are gone).
fn in_code(obj: &object::File<'_>, sym: &object::Symbol<'_, '_>) -> bool {
    const SHF_EXECINSTR: u64 = 0x4;
    sym.section_index()
        .and_then(|i| obj.section_by_index(i).ok())
        .is_some_and(|s| match s.flags() {
            object::SectionFlags::Elf { sh_flags } => sh_flags & SHF_EXECINSTR != 0,
            _ => false,
        })
}

fn index_symbols(obj: &object::File<'_>, data: &[u8]) -> Vec<Sym> {
    let base = data.as_ptr() as usize;
    // start, size, section end, name, whether an untyped label
    let mut raw: Vec<(u64, u64, u64, u32, u32, bool)> = Vec::new();
    for sym in obj.symbols().chain(obj.dynamic_symbols()) {
        if raw.len() >= MAX_SYMBOLS {
            break;
        }
        if sym.address() == 0 || sym.is_undefined() {
            continue;
        }
        let Ok(name) = sym.name_bytes() else { continue };
        if name.is_empty() {
            continue;
        }
        // Functions; and untyped labels in code, as assembly writes entry points (`_start`,
        // `_dl_start_user`), but not ARM's mapping symbols (`$x`, `$d`) or local labels.
        let code_label = sym.kind() == SymbolKind::Unknown
            && !name.starts_with(b"$")
            && !name.starts_with(b".L")
            && in_code(obj, &sym);
        if sym.kind() != SymbolKind::Text && !code_label {
            continue;
        }
        // Names are borrowed from the map: keep their position instead of copying them.
        let Some(off) = (name.as_ptr() as usize).checked_sub(base) else {
            continue;
        };
        let (Ok(name_off), Ok(name_len)) = (u32::try_from(off), u32::try_from(name.len())) else {
            continue;
        };
        let section_end = sym
            .section_index()
            .and_then(|i| obj.section_by_index(i).ok())
            .map(|s| s.address().saturating_add(s.size()))
            .unwrap_or(u64::MAX);
        raw.push((
            sym.address(),
            sym.size(),
            section_end,
            name_off,
            name_len,
            code_label,
        ));
    }
    // Prefer sized symbols at the same address, then functions over labels, then the first
    // name.
    raw.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.5.cmp(&b.5)));
    raw.dedup_by_key(|s| s.0);
    // A label inside a sized function does not name its code: the function does.
    let mut covered = 0;
    raw.retain(|&(start, size, _, _, _, label)| {
        let keep = !label || start >= covered;
        covered = covered.max(start.saturating_add(size));
        keep
    });
    let mut out = Vec::with_capacity(raw.len());
    for (i, &(start, size, section_end, name_off, name_len, _)) in raw.iter().enumerate() {
        let next = raw.get(i + 1).map_or(u64::MAX, |n| n.0);
        let end = if size > 0 {
            start.saturating_add(size)
        } else {
            next.min(section_end)
        };
        if end > start {
            out.push(Sym {
                start,
                end,
                name_off,
                name_len,
            });
        }
    }
    out
}

/// Rust (legacy and v0) and C++ (Itanium) names demangled; anything else as is.
pub fn demangle(name: &str) -> String {
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        return format!("{d:#}");
    }
    if name.starts_with("_Z") {
        if let Ok(sym) = cpp_demangle::Symbol::new(name) {
            if let Ok(d) = sym.demangle() {
                return d;
            }
        }
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangles_rust_and_cpp() {
        assert_eq!(demangle("_ZN3foo3barE"), "foo::bar");
        assert_eq!(demangle("_Z3addii"), "add(int, int)");
        assert_eq!(demangle("main"), "main");
        assert_eq!(demangle("_Znot valid"), "_Znot valid");
    }
}
