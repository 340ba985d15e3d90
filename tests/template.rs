//! `server-template/` is also a cargo-generate template. The files a generated project
//! gets in place of the workspace's (the `.liquid` twins) must say the same as the files
//! this workspace builds and tests: the same dependencies with the same versions and
//! features, the same lints and profile, the same locked versions, and sources that differ
//! only in the crate's name. A project generated against a checkout depends on it by path
//! and version; one generated with `portcullis_path` empty, on the published versions.
//! (`bash .ci/template` generates a project and runs it.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use toml::{Table, Value};

/// What the crate is called in this workspace, and in a generated project's sources.
const CRATE_NAME: &str = "portcullis_template";
const CRATE_NAME_PLACEHOLDER: &str = "{{crate_name}}";
/// Where a generated project finds Portcullis's own crates, as the tests render it.
const CHECKOUT: &str = "/src/portcullis";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_owned()
}

fn template() -> PathBuf {
    root().join("server-template")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn manifest(path: &Path) -> Table {
    read(path)
        .parse()
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn table<'a>(value: &'a Table, key: &str) -> &'a Table {
    value
        .get(key)
        .and_then(Value::as_table)
        .unwrap_or_else(|| panic!("no [{key}] table"))
}

/// The `.liquid` files of the template, relative to it.
fn liquid_files() -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, base: &Path, found: &mut BTreeSet<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("listing the template") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, base, found);
            } else if path.extension().is_some_and(|ext| ext == "liquid") {
                found.insert(path.strip_prefix(base).unwrap().to_owned());
            }
        }
    }
    let mut found = BTreeSet::new();
    walk(&template(), &template(), &mut found);
    found
}

/// A dependency as it resolves: version, path, features and default features.
#[derive(Debug, PartialEq, Eq)]
struct Dependency {
    version: Option<String>,
    path: Option<String>,
    features: BTreeSet<String>,
    default_features: bool,
}

impl Dependency {
    fn from_value(name: &str, value: &Value) -> Self {
        match value {
            Value::String(version) => Self {
                version: Some(version.clone()),
                path: None,
                features: BTreeSet::new(),
                default_features: true,
            },
            Value::Table(spec) => Self {
                version: spec
                    .get("version")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                path: spec.get("path").and_then(Value::as_str).map(str::to_owned),
                features: features(spec),
                default_features: spec
                    .get("default-features")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
            },
            other => panic!("{name}: a dependency must be a string or a table, not {other}"),
        }
    }
}

fn features(spec: &Table) -> BTreeSet<String> {
    spec.get("features")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// The member's dependencies of one kind, with `workspace = true` resolved against the
/// root, and the workspace's own crates pointed at a checkout as a generated project sees
/// them (`{{portcullis_path}}/<folder>`).
fn workspace_dependencies(kind: &str) -> BTreeMap<String, Dependency> {
    let root_manifest = manifest(&root().join("Cargo.toml"));
    let shared = table(table(&root_manifest, "workspace"), "dependencies");
    let member = manifest(&template().join("Cargo.toml"));
    table(&member, kind)
        .iter()
        .map(|(name, value)| {
            let inherits = value
                .as_table()
                .and_then(|spec| spec.get("workspace"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let mut dependency = if inherits {
                let mut dependency = Dependency::from_value(
                    name,
                    shared
                        .get(name)
                        .unwrap_or_else(|| panic!("{name} is not a workspace dependency")),
                );
                dependency
                    .features
                    .extend(features(value.as_table().expect("a table")));
                dependency
            } else {
                Dependency::from_value(name, value)
            };
            if let Some(path) = dependency.path.take() {
                dependency.path = Some(format!("{CHECKOUT}/{path}"));
            }
            (name.clone(), dependency)
        })
        .collect()
}

/// `text` as cargo-generate renders it with `portcullis_path` set to `checkout`: the
/// `{% if portcullis_path != "" %} … {% else %} … {% endif %}` blocks (`{%-` trimming
/// the whitespace before the tag) and the `{{…}}` placeholders.
fn render(text: &str, checkout: &str) -> String {
    let mut rendered = String::new();
    let mut keep = vec![true];
    let mut rest = text;
    while let Some(start) = rest.find("{%") {
        let mut before = &rest[..start];
        let tag_start = &rest[start..];
        if tag_start.starts_with("{%-") {
            before = before.trim_end();
        }
        if keep.iter().all(|k| *k) {
            rendered.push_str(before);
        }
        let end = tag_start.find("%}").expect("a closed tag") + 2;
        let tag = tag_start[2..end - 2].trim_matches(|c: char| c == '-' || c.is_whitespace());
        match tag {
            "if portcullis_path != \"\"" => keep.push(!checkout.is_empty()),
            "else" => {
                let last = keep.pop().expect("else inside if");
                keep.push(!last);
            }
            "endif" => {
                keep.pop().expect("endif closes an if");
            }
            other => panic!("a Liquid tag this test does not know: {other}"),
        }
        rest = &tag_start[end..];
    }
    rendered.push_str(rest);
    assert_eq!(keep, [true], "every if is closed");
    rendered
        .replace("{{portcullis_path}}", checkout)
        .replace("{{project-name}}", "my-app")
        .replace("{{crate_name}}", "my_app")
}

fn generated_manifest(checkout: &str) -> Table {
    let text = render(&read(&template().join("Cargo.toml.liquid")), checkout);
    text.parse()
        .unwrap_or_else(|e| panic!("the manifest rendered for {checkout:?}: {e}\n{text}"))
}

fn generated_dependencies(kind: &str) -> BTreeMap<String, Dependency> {
    let generated = generated_manifest(CHECKOUT);
    table(&generated, kind)
        .iter()
        .map(|(name, value)| (name.clone(), Dependency::from_value(name, value)))
        .collect()
}

#[test]
fn the_generated_manifest_has_the_dependencies_the_workspace_builds_with() {
    for kind in ["dependencies", "dev-dependencies"] {
        let workspace = workspace_dependencies(kind);
        let generated = generated_dependencies(kind);
        let names = |deps: &BTreeMap<String, Dependency>| deps.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&generated), names(&workspace), "[{kind}] names");
        for (name, expected) in &workspace {
            assert_eq!(&generated[name], expected, "[{kind}] {name}");
        }
    }
}

#[test]
fn the_generated_manifest_has_the_workspaces_lints_profile_and_toolchain() {
    let root_manifest = manifest(&root().join("Cargo.toml"));
    let workspace = table(&root_manifest, "workspace");
    let generated = generated_manifest(CHECKOUT);

    assert_eq!(table(&generated, "lints"), table(workspace, "lints"));
    assert_eq!(
        table(&generated, "profile"),
        table(&root_manifest, "profile")
    );
    let package = table(&generated, "package");
    let shared = table(workspace, "package");
    for field in ["edition", "rust-version"] {
        assert_eq!(package.get(field), shared.get(field), "package.{field}");
    }
    assert_eq!(package.get("name").and_then(Value::as_str), Some("my-app"));
    let text = read(&template().join("Cargo.toml.liquid"));
    assert!(
        !text.contains("workspace"),
        "a generated project stands alone"
    );
}

#[test]
fn without_a_checkout_the_generated_project_depends_on_the_published_versions() {
    let generated = generated_manifest("");
    let workspace = workspace_dependencies("dependencies");
    for kind in ["dependencies", "dev-dependencies"] {
        for (name, value) in table(&generated, kind) {
            let dependency = Dependency::from_value(name, value);
            assert_eq!(dependency.path, None, "[{kind}] {name} has no path");
            if name.starts_with("portcullis") {
                assert_eq!(
                    dependency.version, workspace[name].version,
                    "[{kind}] {name} at the workspace's version"
                );
            }
        }
    }
    let config = manifest(&template().join("cargo-generate.toml"));
    let ignored = &config["conditional"]["portcullis_path == \"\""]["ignore"];
    assert_eq!(
        ignored.as_array().map(Vec::as_slice),
        Some(&[Value::from("Cargo.lock")][..]),
        "the lock of path dependencies is not written for the published crates"
    );
}

#[test]
fn the_generated_project_has_no_library_code_and_stays_small() {
    fn rust_lines(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .expect("listing the template")
            .map(|entry| entry.expect("an entry").path())
            .filter(|path| !path.ends_with("target"))
            .map(|path| {
                if path.is_dir() {
                    rust_lines(&path)
                } else if path.extension().is_some_and(|ext| ext == "rs") {
                    read(&path).lines().count()
                } else {
                    0
                }
            })
            .sum()
    }
    let lines = rust_lines(&template());
    assert!(
        lines <= 1_500,
        "the template holds {lines} lines of Rust; at most 1,500"
    );
    let library = root().join("server").join("src");
    for own in ["accounts", "store", "routes", "config"] {
        assert!(library.join(own).is_dir(), "the library keeps {own}/");
        assert!(
            !template().join("src").join(own).exists(),
            "the template holds no copy of the library's {own}/"
        );
    }
}

#[test]
fn the_generated_lock_pins_the_versions_the_workspace_locks() {
    let packages = |path: &Path| -> BTreeSet<(String, String)> {
        let lock = manifest(path);
        lock.get("package")
            .and_then(Value::as_array)
            .expect("[[package]] entries")
            .iter()
            .map(|package| {
                let field =
                    |name: &str| package[name].as_str().expect("name and version").to_owned();
                (field("name"), field("version"))
            })
            .collect()
    };
    let workspace = packages(&root().join("Cargo.lock"));
    let generated = packages(&template().join("Cargo.lock.liquid"));
    let stale: Vec<_> = generated
        .iter()
        .filter(|(name, _)| name != "{{project-name}}")
        .filter(|package| !workspace.contains(*package))
        .collect();
    assert!(
        stale.is_empty(),
        "server-template/Cargo.lock.liquid locks versions the workspace does not: {stale:?}; \
         run `bash .ci/template --refresh-lock`"
    );
    let locked_names: BTreeSet<&str> = generated.iter().map(|(name, _)| name.as_str()).collect();
    for name in workspace_dependencies("dependencies")
        .keys()
        .chain(workspace_dependencies("dev-dependencies").keys())
    {
        assert!(
            locked_names.contains(name.as_str()),
            "{name} is not in server-template/Cargo.lock.liquid; run `bash .ci/template --refresh-lock`"
        );
    }
}

#[test]
fn liquid_sources_differ_from_the_workspaces_only_in_the_crate_name() {
    for source in ["src/main.rs", "tests/notes/main.rs"] {
        let built = read(&template().join(source));
        let twin = read(&template().join(format!("{source}.liquid")));
        assert!(built.contains(CRATE_NAME), "{source} names the crate");
        assert_eq!(
            twin,
            built.replace(CRATE_NAME, CRATE_NAME_PLACEHOLDER),
            "{source}.liquid must be {source} with {CRATE_NAME} written {CRATE_NAME_PLACEHOLDER}"
        );
    }
}

#[test]
fn cargo_generate_renders_exactly_the_liquid_files() {
    let config = manifest(&template().join("cargo-generate.toml"));
    let rendered: BTreeSet<PathBuf> = table(&config, "template")["include"]
        .as_array()
        .expect("an include list")
        .iter()
        .map(|path| PathBuf::from(path.as_str().expect("a path")))
        .collect();
    let twins: BTreeSet<PathBuf> = liquid_files()
        .into_iter()
        .map(|path| path.with_extension(""))
        .collect();
    assert_eq!(
        rendered, twins,
        "include lists the files written from a .liquid twin"
    );
    let placeholders = table(&config, "placeholders");
    assert_eq!(
        placeholders["portcullis_path"]["default"].as_str(),
        Some(""),
        "left empty, the project depends on the published crates"
    );
}
