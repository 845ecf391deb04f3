use std::path::Path;

// Rebuild the kernel programs when bpf-linker changes: it links them.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", Path::new(&linker).display());
    }
}
