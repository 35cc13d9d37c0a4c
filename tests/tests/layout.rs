//! The test crate's layout: every source file is built. Test files are found by cargo
//! (`tests/*.rs`, auto-discovery); a `.rs` file elsewhere at the top of the crate would
//! silently never run, and a bench or tool under `bench/` or `bin/` runs only if
//! `Cargo.toml` declares it as a `[[bin]]`.

use std::path::Path;

fn rs_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".rs"))
        .collect();
    names.sort();
    names
}

#[test]
fn no_source_file_of_the_test_crate_is_left_unbuilt() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let stray = rs_files(root);
    assert!(
        stray.is_empty(),
        "{stray:?} in {}: a test file belongs in tests/ (found by cargo), a bench in bench/",
        root.display()
    );
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for dir in ["bench", "bin"] {
        for f in rs_files(&root.join(dir)) {
            let path = format!("path = \"{dir}/{f}\"");
            assert!(
                manifest.contains(&path),
                "{dir}/{f} is not a [[bin]] of Cargo.toml: it is never built"
            );
        }
    }
}
