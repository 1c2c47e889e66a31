//! Builds `agent-ebpf` for the BPF target with aya-build; `src/ebpf.rs` embeds the object.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    // aya-build relays the nested cargo's stderr as build warnings; without this every build
    // would print its "Compiling ..." lines as warnings. Diagnostics still come through.
    std::env::set_var("CARGO_TERM_QUIET", "true");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent-ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "agent-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
