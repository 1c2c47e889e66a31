//! Kernel symbols from `/proc/kallsyms`, modules included.

use crate::{Error, Frame, Reason, Result, Symbolized};

/// Sorted kernel text symbols.
#[derive(Debug, Clone, Default)]
pub struct KernelResolver {
    /// (address, name index); sorted by address.
    symbols: Vec<(u64, u32)>,
    names: Vec<String>,
    /// Module of each name, when in one (`Frame::file` becomes `[module]`).
    modules: Vec<Option<u32>>,
    module_names: Vec<String>,
}

impl KernelResolver {
    /// Reads `/proc/kallsyms`.
    pub fn from_proc() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/kallsyms").map_err(|source| Error::Io {
            path: "/proc/kallsyms".into(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses kallsyms text: `address type name [module]`. Text symbols (t, T) and weak ones
    /// (w, W) are kept.
    pub fn parse(text: &str) -> Result<Self> {
        let mut r = KernelResolver::default();
        let mut module_index = std::collections::HashMap::<&str, u32>::new();
        let mut saw_nonzero = false;
        let mut lines = 0usize;
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            lines += 1;
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                return Err(Error::BadKallsyms(format!("bad address in line {line:?}")));
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
                    *module_index.entry(m).or_insert_with(|| {
                        r.module_names.push(m.to_string());
                        next
                    })
                });
            let idx = r.names.len() as u32;
            r.names.push(name.to_string());
            r.modules.push(module);
            r.symbols.push((addr, idx));
        }
        if lines == 0 {
            return Err(Error::BadKallsyms("no symbols".into()));
        }
        if !saw_nonzero {
            return Err(Error::BadKallsyms(
                "addresses hidden: run as root or set kernel.kptr_restrict=0".into(),
            ));
        }
        r.symbols.sort_unstable();
        Ok(r)
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
            + self.modules.capacity() * size_of::<Option<u32>>()
            + strings(&self.names)
            + strings(&self.module_names)
    }

    /// The function holding `addr`: the nearest symbol at or below it. Kernel frames have no
    /// file or line; a module's name is given as the file, in brackets.
    pub fn symbolize(&self, addr: u64) -> Symbolized {
        let i = self.symbols.partition_point(|&(a, _)| a <= addr);
        let Some(&(_, idx)) = i.checked_sub(1).and_then(|i| self.symbols.get(i)) else {
            return Symbolized::Unknown(Reason::NoFunction);
        };
        let idx = idx as usize;
        let file = self.modules[idx].map(|m| format!("[{}]", self.module_names[m as usize]));
        Symbolized::Sym(vec![Frame {
            function: self.names[idx].clone(),
            file,
            line: None,
            inlined: false,
        }])
    }

    /// Address of a symbol by name (first match), for tests and diagnostics.
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.symbols
            .iter()
            .find(|&&(_, i)| self.names[i as usize] == name)
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
