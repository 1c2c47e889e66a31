//! Kernel symbols from `/proc/kallsyms`, modules included.

use crate::{Error, Frame, Reason, Result, Symbolized};

/// Sorted kernel text symbols.
#[derive(Debug, Clone, Default)]
pub struct KernelResolver {
    /// (address, name index); sorted by address.
    symbols: Vec<(u64, u32)>,
    /// Every name, back to back: one allocation instead of one per symbol (about 70,000 on a
    /// typical kernel).
    names: String,
    /// (start, end) of each name in `names`.
    name_spans: Vec<(u32, u32)>,
    /// Module of each name, when in one (`Frame::file` becomes `[module]`).
    modules: Vec<Option<u32>>,
    module_names: Vec<String>,
}

/// Why kallsyms could not be read.
enum ParseError {
    Io(std::io::Error),
    Bad(Error),
}

impl KernelResolver {
    /// Reads `/proc/kallsyms`.
    pub fn from_proc() -> Result<Self> {
        let io = |source| Error::Io {
            path: "/proc/kallsyms".into(),
            source,
        };
        // Streamed: the file is ~10 MB of text, most of it symbols we skip.
        let file = std::fs::File::open("/proc/kallsyms").map_err(io)?;
        Self::parse_reader(std::io::BufReader::new(file)).map_err(|e| match e {
            ParseError::Io(source) => io(source),
            ParseError::Bad(e) => e,
        })
    }

    /// Parses kallsyms text: `address type name [module]`. Text symbols (t, T) and weak ones
    /// (w, W) are kept.
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_reader(text.as_bytes()).map_err(|e| match e {
            ParseError::Io(source) => Error::Io {
                path: "kallsyms".into(),
                source,
            },
            ParseError::Bad(e) => e,
        })
    }

    fn parse_reader(mut input: impl std::io::BufRead) -> std::result::Result<Self, ParseError> {
        let mut r = KernelResolver::default();
        let mut module_index = std::collections::HashMap::<String, u32>::new();
        let mut saw_nonzero = false;
        let mut lines = 0usize;
        let mut buf = String::new();
        loop {
            buf.clear();
            if input.read_line(&mut buf).map_err(ParseError::Io)? == 0 {
                break;
            }
            let line = buf.trim_end();
            let mut it = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            lines += 1;
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                return Err(ParseError::Bad(Error::BadKallsyms(format!(
                    "bad address in line {line:?}"
                ))));
            };
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            saw_nonzero |= addr != 0;
            let module = it
                .next()
                .and_then(|m| m.strip_prefix('[')?.strip_suffix(']'))
                .map(|m| {
                    let next = r.module_names.len() as u32;
                    *module_index.entry(m.to_string()).or_insert_with(|| {
                        r.module_names.push(m.to_string());
                        next
                    })
                });
            let (Ok(idx), Ok(start)) = (
                u32::try_from(r.name_spans.len()),
                u32::try_from(r.names.len()),
            ) else {
                return Err(ParseError::Bad(Error::BadKallsyms(
                    "too many symbols".into(),
                )));
            };
            r.names.push_str(name);
            let end = u32::try_from(r.names.len())
                .map_err(|_| ParseError::Bad(Error::BadKallsyms("too many symbols".into())))?;
            r.name_spans.push((start, end));
            r.modules.push(module);
            r.symbols.push((addr, idx));
        }
        if lines == 0 {
            return Err(ParseError::Bad(Error::BadKallsyms("no symbols".into())));
        }
        if !saw_nonzero {
            return Err(ParseError::Bad(Error::BadKallsyms(
                "addresses hidden: run as root or set kernel.kptr_restrict=0".into(),
            )));
        }
        r.symbols.sort_unstable();
        r.symbols.shrink_to_fit();
        r.names.shrink_to_fit();
        r.name_spans.shrink_to_fit();
        r.modules.shrink_to_fit();
        Ok(r)
    }

    /// Name number `idx`.
    fn name(&self, idx: u32) -> &str {
        self.name_spans
            .get(idx as usize)
            .and_then(|&(a, b)| self.names.get(a as usize..b as usize))
            .unwrap_or("")
    }

    /// Number of text symbols.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// True when no text symbol was kept.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// Heap bytes held (symbols, names, modules), an estimate for memory reports.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let strings = |v: &[String]| -> usize {
            v.iter().map(String::capacity).sum::<usize>() + std::mem::size_of_val(v)
        };
        self.symbols.capacity() * size_of::<(u64, u32)>()
            + self.name_spans.capacity() * size_of::<(u32, u32)>()
            + self.modules.capacity() * size_of::<Option<u32>>()
            + self.names.capacity()
            + strings(&self.module_names)
    }

    /// The function holding `addr`: the nearest symbol at or below it. Kernel frames have no
    /// file or line; a module's name is given as the file, in brackets.
    pub fn symbolize(&self, addr: u64) -> Symbolized {
        let i = self.symbols.partition_point(|&(a, _)| a <= addr);
        let Some(&(_, idx)) = i.checked_sub(1).and_then(|i| self.symbols.get(i)) else {
            return Symbolized::Unknown(Reason::NoFunction);
        };
        let file = self
            .modules
            .get(idx as usize)
            .copied()
            .flatten()
            .and_then(|m| self.module_names.get(m as usize))
            .map(|m| format!("[{m}]"));
        Symbolized::Sym(vec![Frame {
            function: self.name(idx).to_string(),
            file,
            line: None,
            inlined: false,
            start_line: None,
        }])
    }

    /// Address of a symbol by name (first match), for tests and diagnostics.
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.symbols
            .iter()
            .find(|&&(_, i)| self.name(i) == name)
            .map(|&(a, _)| a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
ffffffff81000000 T _stext
ffffffff81000100 t helper
ffffffff81000200 D some_data
ffffffff81000300 W weak_fn
ffffffffc0000000 t mod_fn\t[nf_tables]
ffffffffc0000100 t other_mod_fn\t[ext4]
";

    #[test]
    fn resolves_nearest_text_symbol_below() {
        let k = KernelResolver::parse(TEXT).unwrap();
        assert_eq!(k.len(), 5, "data symbols are skipped");
        let name = |a| k.symbolize(a).frames()[0].function.clone();
        assert_eq!(name(0xffff_ffff_8100_0000), "_stext");
        assert_eq!(name(0xffff_ffff_8100_01ff), "helper");
        assert_eq!(name(0xffff_ffff_8100_0250), "helper", "D symbols skipped");
        assert_eq!(name(0xffff_ffff_8100_0300), "weak_fn");
        assert_eq!(
            k.symbolize(0xffff_ffff_c000_0010).frames()[0]
                .file
                .as_deref(),
            Some("[nf_tables]")
        );
        assert_eq!(k.symbolize(0x10), Symbolized::Unknown(Reason::NoFunction));
    }

    #[test]
    fn hidden_addresses_are_a_clear_error() {
        let hidden = "0000000000000000 T _stext\n0000000000000000 t helper\n";
        match KernelResolver::parse(hidden) {
            Err(Error::BadKallsyms(msg)) => assert!(msg.contains("root")),
            other => panic!("{other:?}"),
        }
        assert!(KernelResolver::parse("").is_err());
        assert!(KernelResolver::parse("xyz T foo\n").is_err());
    }
}
