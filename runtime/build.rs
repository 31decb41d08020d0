//! Lists the files of `nats/` for `topology`: `nats/streams/<NAME>.json` and
//! `nats/consumers/<STREAM>/<durable name>.json` are the one declaration of
//! every stream and consumer, so adding a file is all it takes to add one.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_else(|| panic!("{} has no UTF-8 name", path.display()))
        .to_owned()
}

fn main() {
    let nats = Path::new(&env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"))
        .join("..")
        .join("nats");
    // A directory: cargo looks at every file under it.
    println!("cargo:rerun-if-changed={}", nats.display());

    let mut out = String::from("/// `(stream name, JSON)` of every stream, from `nats/streams/`.\n");
    out.push_str("const STREAMS: &[(&str, &str)] = &[\n");
    for file in json_files(&nats.join("streams")) {
        out.push_str(&format!(
            "    ({:?}, include_str!({:?})),\n",
            stem(&file),
            file.display().to_string()
        ));
    }
    out.push_str("];\n\n/// `(stream, durable name, JSON)` of every consumer, from `nats/consumers/`.\n");
    out.push_str("const CONSUMERS: &[(&str, &str, &str)] = &[\n");
    let mut streams: Vec<PathBuf> = fs::read_dir(nats.join("consumers"))
        .expect("nats/consumers")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    streams.sort();
    for stream in streams {
        for file in json_files(&stream) {
            out.push_str(&format!(
                "    ({:?}, {:?}, include_str!({:?})),\n",
                stem(&stream),
                stem(&file),
                file.display().to_string()
            ));
        }
    }
    out.push_str("];\n");
    let target = Path::new(&env::var("OUT_DIR").expect("cargo sets it")).join("topology.rs");
    fs::write(&target, out).unwrap_or_else(|e| panic!("writing {}: {e}", target.display()));
}
