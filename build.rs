//! Records the git commit the binary was built from, so every run directory can say which code
//! produced it (`FUNCRL_GIT`, "unknown" outside a git checkout), and compiles the shipped
//! `configs/**/*.toml` into the binary, so an installed `funcrl` can use them by name.
use std::path::Path;
use std::process::Command;

/// `configs/<dir>/<name>.toml` → ("<dir>/<name>", absolute path), sorted.
fn shipped_configs(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dirs = std::fs::read_dir(root.join("configs")).expect("configs/");
    for dir in dirs.flatten().filter(|d| d.path().is_dir()) {
        for f in std::fs::read_dir(dir.path())
            .expect("a config folder")
            .flatten()
        {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "toml") {
                let name = format!(
                    "{}/{}",
                    dir.file_name().to_string_lossy(),
                    p.file_stem().expect("a file name").to_string_lossy()
                );
                out.push((name, p.display().to_string()));
            }
        }
    }
    out.sort();
    out
}

fn main() {
    let git = Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=FUNCRL_GIT={git}");

    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it");
    let mut table = String::from("&[\n");
    for (name, path) in shipped_configs(Path::new(&root)) {
        table.push_str(&format!("    ({name:?}, include_str!({path:?})),\n"));
    }
    table.push_str("]\n");
    let out = std::env::var("OUT_DIR").expect("cargo sets it");
    std::fs::write(Path::new(&out).join("shipped_configs.rs"), table).expect("OUT_DIR is writable");
    println!("cargo:rerun-if-changed=configs");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
}
