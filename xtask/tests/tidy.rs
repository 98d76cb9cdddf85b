//! Tidy checks of the repository itself, in `cargo test`: dependencies
//! declared and used, the layering of DESIGN.md, crate docs with runnable
//! examples, and source files of a reviewable size.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The workspace's packages, from `cargo metadata`.
fn packages() -> Vec<Value> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .current_dir(root())
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    metadata["packages"].as_array().expect("packages").clone()
}

fn name(package: &Value) -> &str {
    package["name"].as_str().expect("a package name")
}

fn directory(package: &Value) -> PathBuf {
    Path::new(package["manifest_path"].as_str().expect("a manifest path"))
        .parent()
        .expect("a package directory")
        .to_owned()
}

/// Each dependency of `package`: its name as code names it, its package
/// name, and its kind (`normal`, `dev` or `build`).
fn dependencies(package: &Value) -> Vec<(String, String, String)> {
    package["dependencies"]
        .as_array()
        .expect("dependencies")
        .iter()
        .map(|dependency| {
            let package = dependency["name"].as_str().expect("a dependency name").to_owned();
            let code = dependency["rename"].as_str().unwrap_or(&package).replace('-', "_");
            let kind = dependency["kind"].as_str().unwrap_or("normal").to_owned();
            (code, package, kind)
        })
        .collect()
}

fn rust_files(directory: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path
                .file_name()
                .is_some_and(|name| name != "target" && name != "node_modules")
            {
                rust_files(&path, files);
            }
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn every_workspace_dependency_is_used() {
    let manifest: toml::Table = fs::read_to_string(root().join("Cargo.toml"))
        .expect("the workspace manifest")
        .parse()
        .expect("TOML");
    let declared: BTreeSet<&String> = manifest["workspace"]["dependencies"]
        .as_table()
        .expect("[workspace.dependencies]")
        .keys()
        .collect();
    let used: BTreeSet<String> = packages()
        .iter()
        .flat_map(|package| dependencies(package).into_iter().map(|(_, name, _)| name))
        .collect();
    let unused: Vec<_> = declared.into_iter().filter(|name| !used.contains(*name)).collect();
    assert!(unused.is_empty(), "workspace dependencies no crate uses: {unused:?}");
}

#[test]
fn every_crate_dependency_is_named_in_its_code() {
    let mut unused = Vec::new();
    for package in packages() {
        let directory = directory(&package);
        let mut files = Vec::new();
        rust_files(&directory, &mut files);
        let code: String = files
            .iter()
            .filter_map(|file| fs::read_to_string(file).ok())
            .collect::<Vec<_>>()
            .join("\n");
        let manifest = fs::read_to_string(directory.join("Cargo.toml")).expect("a manifest");
        // The README is the crate's doc, its examples doc tests.
        let readme = fs::read_to_string(directory.join("README.md")).unwrap_or_default();
        for (ident, dependency, kind) in dependencies(&package) {
            let named = [&code, &readme].iter().any(|text| mentions(text, &ident))
                // Turned on only to set a feature of its own: `dep/feature`.
                || manifest.contains(&format!("\"{dependency}/"))
                || manifest.contains(&format!("\"{dependency}?/"));
            if !named {
                unused.push(format!("{} ({kind}): {dependency}", name(&package)));
            }
        }
    }
    assert!(unused.is_empty(), "dependencies their crate never names: {unused:#?}");
}

/// Whether `ident` appears in `code` as a path's first segment or in a
/// `use`: `ident::`, `use ident`, `ident!`.
fn mentions(code: &str, ident: &str) -> bool {
    code.match_indices(ident).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = &code[at + ident.len()..];
        let starts_a_word = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        starts_a_word
            && (after.starts_with("::")
                || after.starts_with(';')
                || after.starts_with(" as ")
                || after.starts_with(",")
                || after.starts_with('}'))
    })
}

#[test]
fn the_layering_of_design_md_holds() {
    let packages = packages();
    let normal: BTreeMap<&str, Vec<String>> = packages
        .iter()
        .map(|package| {
            let normal = dependencies(package)
                .into_iter()
                .filter(|(_, _, kind)| kind == "normal")
                .map(|(_, name, _)| name)
                .collect();
            (name(package), normal)
        })
        .collect();
    let is_method = |name: &str| name.starts_with("integration-auth-") || name == "integration-sftp";
    let mut broken = Vec::new();
    for (package, dependencies) in &normal {
        for dependency in dependencies {
            if is_method(package) && dependency.starts_with("integration-storage-") {
                broken.push(format!("{package} depends on the storage backend {dependency}"));
            }
            // The binary sits on the gateway; nothing sits on either.
            let on_top = dependency == "integrations-cli"
                || (dependency == "integrations-gateway" && *package != "integrations-cli");
            if on_top {
                broken.push(format!("{package} depends on {dependency}"));
            }
            if *package == "integration-core" && is_method(dependency) {
                broken.push(format!("core depends on the method crate {dependency}"));
            }
            if *package == "integration-template" && dependency.starts_with("integration") {
                broken.push(format!("the template crate depends on {dependency}"));
            }
            // SFTP alone builds no HTTP stack.
            if matches!(*package, "integration-core" | "integration-sftp")
                && matches!(dependency.as_str(), "integration-http" | "reqwest" | "rustls")
            {
                broken.push(format!("{package} depends on {dependency}"));
            }
        }
    }
    // The facade re-exports; what runs lives in the crates it re-exports.
    let facade = fs::read_to_string(root().join("crates/integrations/src/lib.rs")).expect("the facade's lib.rs");
    for item in ["fn ", "struct ", "enum ", "impl ", "trait ", "static "] {
        if facade
            .lines()
            .any(|line| line.trim_start().starts_with(item) || line.contains(&format!("pub {item}")))
        {
            broken.push(format!(
                "the facade defines a `{}`: it holds re-exports only",
                item.trim()
            ));
        }
    }
    assert!(broken.is_empty(), "DESIGN.md's layering is broken: {broken:#?}");
}

#[test]
fn every_library_documents_itself_from_its_readme_with_a_runnable_example() {
    let mut missing = Vec::new();
    for package in packages() {
        let is_library = package["targets"].as_array().expect("targets").iter().any(|target| {
            target["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "lib"))
        });
        if !is_library {
            continue;
        }
        let directory = directory(&package);
        let lib = fs::read_to_string(directory.join("src/lib.rs")).unwrap_or_default();
        if !lib.starts_with("#![doc = include_str!(\"../README.md\")]") {
            missing.push(format!(
                "{}: src/lib.rs does not start with its README as its doc",
                name(&package)
            ));
        }
        let readme = fs::read_to_string(directory.join("README.md")).unwrap_or_default();
        let runnable = readme
            .lines()
            .any(|line| line == "```rust" || line == "```rust,no_run" || line.starts_with("```rust,should_panic"));
        if !runnable {
            missing.push(format!(
                "{}: README.md has no doc-tested example (```rust or ```rust,no_run)",
                name(&package)
            ));
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

/// A source file longer than this says why at its top, in a line starting
/// `//! Longer than 1,000 lines:`.
const LONGEST_FILE: usize = 1_000;

#[test]
fn no_source_file_grows_past_a_thousand_lines_without_a_reason() {
    let mut files = Vec::new();
    for package in packages() {
        rust_files(&directory(&package).join("src"), &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let text = fs::read_to_string(file).ok()?;
            let lines = text.lines().count();
            let explained = text
                .lines()
                .take(20)
                .any(|line| line.starts_with("//! Longer than 1,000 lines:"));
            (lines > LONGEST_FILE && !explained).then(|| format!("{}: {lines} lines", file.display()))
        })
        .collect();
    assert!(long.is_empty(), "files to split, or to explain: {long:#?}");
}
