//! `bellows symbolize`: addresses to functions, files and lines, from the command line.
//!
//! Text output mirrors `llvm-symbolizer --inlining`: per address, two lines per frame (function,
//! then `file:line:column`), innermost first, and a blank line. `--json` prints one array:
//! `[{"address":"0x…","frames":[{"function","file","line","inlined"}…]}]`, with a `"reason"`
//! for an unknown address.

use std::{
    io::{BufRead, Write},
    path::PathBuf,
};

use serde_json::json;
use symbolizer::{ElfResolver, Input, Process, Reason, Source, Symbolized, Symbolizer};

/// Where addresses come from.
#[derive(Debug, Clone)]
pub enum Target {
    /// Virtual addresses as in this ELF file.
    Elf(PathBuf),
    /// Absolute addresses in this live process (kernel addresses through kallsyms).
    Pid(u32),
}

#[derive(Debug, thiserror::Error)]
pub enum SymbolizeError {
    #[error("{0}")]
    Symbolizer(#[from] symbolizer::Error),
    #[error("invalid address {0:?}: expected a hexadecimal number such as 0x401000")]
    BadAddress(String),
    #[error("reading addresses from standard input: {0}")]
    Stdin(#[source] std::io::Error),
    #[error("writing the answers: {0}")]
    Output(#[source] std::io::Error),
    #[error("cannot read the mappings of process {pid}: {source}")]
    Process {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Parses `0x401000` or `401000`.
pub fn parse_address(s: &str) -> Result<u64, SymbolizeError> {
    let t = s.trim();
    let hex = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u64::from_str_radix(hex, 16).map_err(|_| SymbolizeError::BadAddress(s.to_string()))
}

/// The addresses given, or one per non-empty line of standard input when none are.
pub fn read_addresses(given: &[String]) -> Result<Vec<u64>, SymbolizeError> {
    if !given.is_empty() {
        return given.iter().map(|a| parse_address(a)).collect();
    }
    let mut out = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(SymbolizeError::Stdin)?;
        if !line.trim().is_empty() {
            out.push(parse_address(&line)?);
        }
    }
    Ok(out)
}

/// Symbolizes every address in order, handing answers to `each` a batch at a time, so that
/// output streams and memory stays flat however many addresses there are. One bad address
/// never fails the others.
pub fn symbolize_each(
    target: &Target,
    addrs: &[u64],
    mut each: impl FnMut(u64, Symbolized) -> std::io::Result<()>,
) -> Result<(), SymbolizeError> {
    match target {
        Target::Elf(path) => {
            let resolver = ElfResolver::open(path)?;
            for chunk in addrs.chunks(ELF_CHUNK) {
                for (&a, answer) in chunk.iter().zip(resolver.symbolize_batch(chunk)) {
                    each(a, answer).map_err(SymbolizeError::Output)?;
                }
            }
            Ok(())
        }
        Target::Pid(pid) => symbolize_process(*pid, addrs, each),
    }
}

/// Addresses of one file symbolized per call: a batch is looked up in address order on several
/// threads, and its answers held until it is printed.
const ELF_CHUNK: usize = 4096;

/// Kernel addresses on x86-64 and arm64 live in the upper half.
fn is_kernel_address(addr: u64) -> bool {
    addr >= 0xffff_8000_0000_0000
}

/// Addresses symbolized per call: bounds memory however many addresses there are, while
/// lookups within a chunk still go one binary at a time.
const CHUNK: usize = 4096;

/// Absolute addresses of a live process through the symbolizer's process source, the path
/// `record` and `run` take: executable mappings, the files behind them, and the vDSO; kernel
/// addresses through kallsyms.
fn symbolize_process(
    pid: u32,
    addrs: &[u64],
    mut each: impl FnMut(u64, Symbolized) -> std::io::Result<()>,
) -> Result<(), SymbolizeError> {
    let mut process =
        Process::capture(pid).map_err(|source| SymbolizeError::Process { pid, source })?;
    let mut symbolizer = Symbolizer::new();
    for (path, err) in symbolizer.prepare(&mut process) {
        tracing::debug!(pid, file = %path, "no symbols: {err}");
    }
    if addrs.iter().any(|&a| is_kernel_address(a)) {
        if let Err(err) = symbolizer.kernel() {
            tracing::debug!("kernel symbols unavailable: {err}");
        }
    }
    for chunk in addrs.chunks(CHUNK) {
        let (kernel, user): (Vec<u64>, Vec<u64>) =
            chunk.iter().partition(|&&a| is_kernel_address(a));
        let mut answers = symbolizer
            .symbolize_many(&[
                (Source::Process(&process), Input::AbsAddr(&user)),
                (Source::Kernel, Input::AbsAddr(&kernel)),
            ])
            .into_iter();
        let mut user = answers.next().unwrap_or_default().into_iter();
        let mut kernel = answers.next().unwrap_or_default().into_iter();
        for &addr in chunk {
            let answer = if is_kernel_address(addr) {
                kernel.next()
            } else {
                user.next()
            };
            let answer = answer.unwrap_or(Symbolized::Unknown(Reason::NoSymbols));
            each(addr, answer).map_err(SymbolizeError::Output)?;
        }
    }
    Ok(())
}

/// How answers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `llvm-symbolizer --inlining` style: per address, two lines per frame (function, then
    /// `file:line:column`), innermost first, and a blank line.
    Text,
    /// One JSON array, as the CLI contract describes.
    Json,
}

/// Writes answers one at a time in a [`Format`]; [`AnswerWriter::finish`] closes the output.
pub struct AnswerWriter<W: Write> {
    out: W,
    format: Format,
    written: usize,
}

impl<W: Write> AnswerWriter<W> {
    pub fn new(out: W, format: Format) -> Self {
        AnswerWriter {
            out,
            format,
            written: 0,
        }
    }

    pub fn write(&mut self, addr: u64, result: &Symbolized) -> std::io::Result<()> {
        match self.format {
            Format::Text => {
                match result {
                    Symbolized::Sym(frames) => {
                        for f in frames {
                            writeln!(
                                self.out,
                                "{}\n{}:{}:0",
                                f.function,
                                f.file.as_deref().unwrap_or("??"),
                                f.line.unwrap_or(0)
                            )?;
                        }
                    }
                    Symbolized::Unknown(_) => self.out.write_all(b"??\n??:0:0\n")?,
                }
                self.out.write_all(b"\n")?;
            }
            Format::Json => {
                let entry = match result {
                    Symbolized::Sym(frames) => json!({
                        "address": format!("{addr:#x}"),
                        "frames": frames.iter().map(|f| json!({
                            "function": f.function,
                            "file": f.file,
                            "line": f.line,
                            "inlined": f.inlined,
                        })).collect::<Vec<_>>(),
                    }),
                    Symbolized::Unknown(reason) => json!({
                        "address": format!("{addr:#x}"),
                        "frames": [],
                        "reason": reason.to_string(),
                    }),
                };
                self.out
                    .write_all(if self.written == 0 { b"[" } else { b"," })?;
                serde_json::to_writer(&mut self.out, &entry)?;
            }
        }
        self.written += 1;
        Ok(())
    }

    /// Ends the output (the JSON array's closing bracket) and flushes it.
    pub fn finish(mut self) -> std::io::Result<W> {
        if self.format == Format::Json {
            self.out
                .write_all(if self.written == 0 { b"[]\n" } else { b"]\n" })?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use symbolizer::Frame;

    use super::*;

    fn render(results: &[(u64, Symbolized)], format: Format) -> String {
        let mut w = AnswerWriter::new(Vec::new(), format);
        for (addr, result) in results {
            w.write(*addr, result).expect("writing to memory");
        }
        String::from_utf8(w.finish().expect("writing to memory")).expect("UTF-8 answers")
    }

    fn render_text(results: &[(u64, Symbolized)]) -> String {
        render(results, Format::Text)
    }

    fn render_json(results: &[(u64, Symbolized)]) -> String {
        render(results, Format::Json)
    }

    #[test]
    fn addresses_parse_with_or_without_prefix() {
        assert_eq!(parse_address("0x401000").unwrap(), 0x401000);
        assert_eq!(parse_address("401000").unwrap(), 0x401000);
        assert_eq!(parse_address(" 0XFF ").unwrap(), 0xff);
        assert!(parse_address("0xzz").is_err());
        assert!(parse_address("").is_err());
        assert!(parse_address("0x1ffffffffffffffff").is_err());
    }

    fn sample() -> Vec<(u64, Symbolized)> {
        vec![
            (
                0x10,
                Symbolized::Sym(vec![
                    Frame {
                        function: "inner".into(),
                        file: Some("a.c".into()),
                        line: Some(3),
                        inlined: true,
                        start_line: None,
                    },
                    Frame {
                        function: "outer".into(),
                        file: None,
                        line: None,
                        inlined: false,
                        start_line: None,
                    },
                ]),
            ),
            (0x20, Symbolized::Unknown(Reason::NoFunction)),
        ]
    }

    #[test]
    fn text_mirrors_llvm_symbolizer() {
        assert_eq!(
            render_text(&sample()),
            "inner\na.c:3:0\nouter\n??:0:0\n\n??\n??:0:0\n\n"
        );
    }

    #[test]
    fn json_follows_the_contract() {
        let v: serde_json::Value = serde_json::from_str(&render_json(&sample())).unwrap();
        assert_eq!(v[0]["address"], "0x10");
        assert_eq!(v[0]["frames"][0]["function"], "inner");
        assert_eq!(v[0]["frames"][0]["inlined"], true);
        assert_eq!(v[0]["frames"][1]["file"], serde_json::Value::Null);
        assert_eq!(v[1]["frames"].as_array().unwrap().len(), 0);
        assert_eq!(v[1]["reason"], "no function at address");
        assert_eq!(render_json(&[]), "[]\n");
    }
}
