//! Builds the kernel programs (observer-ebpf) for the BPF target and leaves the object in OUT_DIR,
//! where `include_bytes_aligned!` embeds it: `gilwatch` is one self-contained executable.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("running cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "observer-ebpf")
        .ok_or_else(|| anyhow!("observer-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("observer-ebpf has no manifest directory"))?
        .as_str()
        .to_owned();
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: &root_dir,
        ..Default::default()
    };
    // Debian's rustc-web, linked into rustup as `debian-bpf` by `cargo xtask setup`, ships a
    // prebuilt `core` for the BPF target, so no -Z build-std (and no rust-src) is needed.
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom("debian-bpf"))
}
