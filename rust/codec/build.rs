//! Embeds every `.avsc` of the repository's `schemas/` (current and released) into the crate,
//! so an installed wheel carries the very schemas it was built from. The files stay the single
//! source of truth; this is a build-time copy of them.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            collect(&path, &format!("{prefix}{name}/"), out);
        } else if name.ends_with(".avsc") {
            out.push((format!("{prefix}{name}"), path));
        }
    }
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let schemas = manifest.join("../../schemas");
    println!("cargo:rerun-if-changed={}", schemas.display());
    println!(
        "cargo:rerun-if-changed={}",
        schemas.join("released").display()
    );
    let mut files = Vec::new();
    collect(&schemas, "", &mut files);
    let mut code =
        String::from("/// Every schema file: (path relative to `schemas/`, JSON text).\n");
    code.push_str("pub static SCHEMA_FILES: &[(&str, &str)] = &[\n");
    for (rel, path) in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let abs = path.canonicalize().unwrap();
        code.push_str(&format!(
            "    ({rel:?}, include_str!({:?})),\n",
            abs.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("schema_files.rs");
    fs::write(out, code).unwrap();
}
