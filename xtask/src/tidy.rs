//! `cargo xtask tidy`: the shape of the code that no compiler checks (STYLE.md section 1).
//!
//! - **The crate graph.** Every dependency edge between workspace crates, as `cargo metadata`
//!   reports it, must be one that ARCHITECTURE.md's "Crate graph" table allows, and every edge the
//!   table lists must exist, so the map and the manifests cannot drift apart. Every workspace
//!   crate needs a row: a new crate has no place until the map gives it one.
//! - **No client types in public signatures.** No public item of a published library crate may
//!   name a type of the Redis or RabbitMQ clients (`redis`, `deadpool_redis`, `lapin`), nor of a
//!   crate the table allows to name them (dq-redis-conn): those are internal glue, never API.
//! - **Features build only what they name** ([`features`]): for each set of the facade's
//!   features, `cargo tree` shows no broker client, CLI or optional crate it does not ask for.
//!
//! The second check reads the source with `syn` rather than rustdoc's JSON (nightly only). It
//! follows `use` imports within a module (renames, groups, globs, `use super::*`) and private
//! type aliases, which is how client types reach a signature here; it does not resolve paths
//! through our own modules, so a client type re-exported under a new name by another module of
//! the crate would go unseen (and that `pub use` itself is what gets reported).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use syn::spanned::Spanned;
use syn::visit::Visit;

use crate::{cmd, Ctx};

mod features;

/// The client crates whose types stay out of dq's public API, by the name code uses for them.
const CLIENT_CRATES: &[&str] = &["redis", "deadpool_redis", "lapin"];

/// The section of ARCHITECTURE.md whose table is the crate graph.
const SECTION: &str = "## Crate graph";

pub(crate) fn run(ctx: &Ctx) -> Result<()> {
    let out = cmd::output(
        ctx.cargo()
            .args(["metadata", "--format-version", "1", "--no-deps"]),
    )?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let meta: Value = serde_json::from_slice(&out.stdout).context("cargo metadata's JSON")?;
    let packages = packages(&meta)?;
    let doc_path = ctx.root.join("ARCHITECTURE.md");
    let doc = std::fs::read_to_string(&doc_path)
        .with_context(|| format!("cannot read {}", doc_path.display()))?;
    let map = CrateMap::parse(&doc).context("ARCHITECTURE.md, section \"## Crate graph\"")?;

    let mut problems = check_graph(&map, &packages);
    let mut checked = 0;
    for p in &packages {
        let Some(lib) = &p.lib else { continue };
        // Unpublished crates (test support, benchmarks, examples, xtask) are no one's API.
        if !p.publish || map.rows.get(&p.name).is_some_and(|r| r.client_types) {
            continue;
        }
        let forbidden = forbidden_names(p, &map);
        checked += 1;
        for f in check_crate(lib, &forbidden)? {
            let file = f.file.strip_prefix(&ctx.root).unwrap_or(&f.file);
            problems.push(format!(
                "{} {}:{}: {} names {}",
                p.name,
                file.display(),
                f.line,
                f.item,
                f.names
            ));
        }
    }
    let (feature_problems, feature_sets) = features::check(ctx, &meta)?;
    problems.extend(feature_problems);
    if !problems.is_empty() {
        for p in &problems {
            println!("tidy: {p}");
        }
        bail!("{} problem(s) (see above)", problems.len());
    }
    let edges: usize = packages.iter().map(|p| p.deps.len()).sum();
    println!(
        "tidy: ok: {} crates and {edges} edges as ARCHITECTURE.md maps them; {checked} library \
         crates name no client type in a public signature; {feature_sets} sets of dq's features \
         build only what they name",
        packages.len()
    );
    Ok(())
}

/// What the checks need to know of a workspace package.
struct Package {
    name: String,
    /// `false` for `publish = false`.
    publish: bool,
    /// The library target's root file, if the package has a library.
    lib: Option<PathBuf>,
    /// Its dependencies on workspace crates.
    deps: Vec<(String, Kind)>,
    /// The names its code uses for its normal dependencies (dashes as underscores, renames).
    extern_names: HashSet<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Normal,
    Build,
    Dev,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Normal => "dependency",
            Kind::Build => "build-dependency",
            Kind::Dev => "dev-dependency",
        }
    }
}

fn packages(meta: &Value) -> Result<Vec<Package>> {
    let list = meta["packages"]
        .as_array()
        .context("cargo metadata has no packages")?;
    let members: HashSet<&str> = list.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut out = Vec::new();
    for p in list {
        let name = p["name"].as_str().context("a package without a name")?;
        // `publish = false` is an empty list of registries; absent (null) is crates.io.
        let publish = !p["publish"].as_array().is_some_and(|r| r.is_empty());
        let lib = p["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| {
                t["kind"].as_array().is_some_and(|k| {
                    k.iter().any(|k| {
                        matches!(k.as_str(), Some("lib" | "rlib" | "dylib" | "proc-macro"))
                    })
                })
            })
            .and_then(|t| t["src_path"].as_str())
            .map(PathBuf::from);
        let mut deps = Vec::new();
        let mut extern_names = HashSet::new();
        for d in p["dependencies"].as_array().into_iter().flatten() {
            let dep = d["name"].as_str().context("a dependency without a name")?;
            let kind = match d["kind"].as_str() {
                None => Kind::Normal,
                Some("build") => Kind::Build,
                Some("dev") => Kind::Dev,
                Some(other) => bail!("{name}: unknown dependency kind {other:?}"),
            };
            if kind == Kind::Normal {
                let used = d["rename"].as_str().unwrap_or(dep);
                extern_names.insert(used.replace('-', "_"));
            }
            if members.contains(dep) {
                deps.push((dep.to_owned(), kind));
            }
        }
        out.push(Package {
            name: name.to_owned(),
            publish,
            lib,
            deps,
            extern_names,
        });
    }
    Ok(out)
}

/// The names a crate must not name in public signatures: the client crates and the crates
/// allowed to wrap them, as far as it depends on them.
fn forbidden_names(p: &Package, map: &CrateMap) -> HashSet<String> {
    CLIENT_CRATES
        .iter()
        .map(|c| (*c).to_owned())
        .chain(
            map.rows
                .iter()
                .filter(|(_, r)| r.client_types)
                .map(|(name, _)| name.replace('-', "_")),
        )
        .filter(|n| p.extern_names.contains(n))
        .collect()
}

/// ARCHITECTURE.md's crate graph table.
#[derive(Debug, Default)]
struct CrateMap {
    rows: BTreeMap<String, Row>,
    /// Dev-dependencies every crate may have (the "any crate" row).
    any_dev: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Row {
    deps: BTreeSet<String>,
    dev: BTreeSet<String>,
    /// May name client types in public signatures.
    client_types: bool,
}

impl CrateMap {
    /// Reads the first table under `## Crate graph`: `| crate | depends on | dev-depends on |
    /// client types |`, crate names in backticks, `—` for none, `allowed` in the last column for
    /// a crate that may name client types.
    fn parse(doc: &str) -> Result<CrateMap> {
        let mut lines = doc
            .lines()
            .enumerate()
            .skip_while(|(_, l)| l.trim() != SECTION);
        if lines.next().is_none() {
            bail!("no {SECTION:?} section");
        }
        let table: Vec<(usize, &str)> = lines
            .take_while(|(_, l)| !l.starts_with("## "))
            .skip_while(|(_, l)| !l.trim_start().starts_with('|'))
            .take_while(|(_, l)| l.trim_start().starts_with('|'))
            .collect();
        if table.len() < 3 {
            bail!("no table with a header and rows");
        }
        let mut map = CrateMap::default();
        // The header and the `|---|` line.
        for &(n, line) in &table[2..] {
            let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
            let [krate, deps, dev, client] = cells[..] else {
                bail!("line {}: expected 4 columns, found {}", n + 1, cells.len());
            };
            if krate.trim() == "any crate" {
                map.any_dev = crate_names(dev);
                continue;
            }
            let names = crate_names(krate);
            let Some(name) = names.iter().next().filter(|_| names.len() == 1) else {
                bail!("line {}: the first column must name one crate", n + 1);
            };
            let client = match client.trim() {
                "allowed" => true,
                "—" | "" => false,
                other => bail!("line {}: client types {other:?}: `allowed` or `—`", n + 1),
            };
            let row = Row {
                deps: crate_names(deps),
                dev: crate_names(dev),
                client_types: client,
            };
            if map.rows.insert(name.clone(), row).is_some() {
                bail!("line {}: a second row for {name}", n + 1);
            }
        }
        Ok(map)
    }
}

/// The backticked names in a table cell.
fn crate_names(cell: &str) -> BTreeSet<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.trim().to_owned())
        .collect()
}

fn check_graph(map: &CrateMap, packages: &[Package]) -> Vec<String> {
    let mut problems = Vec::new();
    let names: HashSet<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    for name in map.rows.keys().chain(&map.any_dev) {
        if !names.contains(name.as_str()) {
            problems.push(format!(
                "ARCHITECTURE.md's crate graph names {name}, which is not a workspace crate"
            ));
        }
    }
    for p in packages {
        let Some(row) = map.rows.get(&p.name) else {
            problems.push(format!(
                "crate {} has no row in ARCHITECTURE.md's crate graph: give it its place in the \
                 map first",
                p.name
            ));
            continue;
        };
        let normal: BTreeSet<&str> = p
            .deps
            .iter()
            .filter(|(_, k)| *k != Kind::Dev)
            .map(|(d, _)| d.as_str())
            .collect();
        let dev: BTreeSet<&str> = p
            .deps
            .iter()
            .filter(|(_, k)| *k == Kind::Dev)
            .map(|(d, _)| d.as_str())
            .collect();
        for (dep, kind) in &p.deps {
            let allowed = match kind {
                Kind::Normal | Kind::Build => row.deps.contains(dep),
                // A dev-dependency on a normal dependency only turns on more of it.
                Kind::Dev => {
                    row.deps.contains(dep) || row.dev.contains(dep) || map.any_dev.contains(dep)
                }
            };
            if !allowed {
                problems.push(format!(
                    "edge {} -> {dep} ({}) is not in ARCHITECTURE.md's crate graph: an edge is a \
                     design decision, map it there with its reason, or remove it",
                    p.name,
                    kind.describe()
                ));
            }
        }
        for dep in &row.deps {
            if !normal.contains(dep.as_str()) {
                problems.push(format!(
                    "ARCHITECTURE.md's crate graph maps {} -> {dep}, but {} has no such \
                     dependency: update the table",
                    p.name, p.name
                ));
            }
        }
        for dep in &row.dev {
            if !dev.contains(dep.as_str()) {
                problems.push(format!(
                    "ARCHITECTURE.md's crate graph maps {} -> {dep} (dev), but {} has no such \
                     dev-dependency: update the table",
                    p.name, p.name
                ));
            }
        }
    }
    problems
}

/// One public item that names a forbidden type.
#[derive(Debug)]
struct Finding {
    file: PathBuf,
    line: usize,
    item: String,
    names: String,
}

/// A module of the crate: its file and its own items (an inline module is a module of its own).
struct Module {
    file: PathBuf,
    items: Vec<syn::Item>,
    parent: Option<usize>,
}

/// Checks the library whose root file is `lib`.
fn check_crate(lib: &Path, forbidden: &HashSet<String>) -> Result<Vec<Finding>> {
    let mut modules = Vec::new();
    let dir = lib.parent().context("a library root without a directory")?;
    load(lib, dir, None, &mut modules)?;
    Ok(check_modules(&modules, forbidden))
}

/// Parses `file` and the module files it declares (`mod x;`), depth first, parents first.
fn load(
    file: &Path,
    children_dir: &Path,
    parent: Option<usize>,
    out: &mut Vec<Module>,
) -> Result<()> {
    let src =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let ast = syn::parse_file(&src).with_context(|| format!("cannot parse {}", file.display()))?;
    add_module(file, ast.items, children_dir, parent, out)
}

fn add_module(
    file: &Path,
    items: Vec<syn::Item>,
    children_dir: &Path,
    parent: Option<usize>,
    out: &mut Vec<Module>,
) -> Result<()> {
    let me = out.len();
    let mods: Vec<syn::ItemMod> = items
        .iter()
        .filter_map(|i| match i {
            syn::Item::Mod(m) if !is_cfg_test(&m.attrs) => Some(m.clone()),
            _ => None,
        })
        .collect();
    out.push(Module {
        file: file.to_path_buf(),
        items,
        parent,
    });
    for m in mods {
        let name = m.ident.to_string();
        match m.content {
            Some((_, items)) => add_module(file, items, &children_dir.join(&name), Some(me), out)?,
            None => {
                let path = match path_attr(&m.attrs) {
                    Some(p) => file.parent().unwrap_or(children_dir).join(p),
                    None => {
                        let flat = children_dir.join(format!("{name}.rs"));
                        if flat.exists() {
                            flat
                        } else {
                            children_dir.join(&name).join("mod.rs")
                        }
                    }
                };
                let dir = if path.file_name().is_some_and(|f| f == "mod.rs") {
                    path.parent().unwrap_or(children_dir).to_path_buf()
                } else {
                    path.with_extension("")
                };
                load(&path, &dir, Some(me), out)?;
            }
        }
    }
    Ok(())
}

fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| match &a.meta {
        syn::Meta::List(l) => l.path.is_ident("cfg") && l.tokens.to_string() == "test",
        _ => false,
    })
}

fn is_pub(vis: &syn::Visibility) -> bool {
    matches!(vis, syn::Visibility::Public(_))
}

fn check_modules(modules: &[Module], forbidden: &HashSet<String>) -> Vec<Finding> {
    // The crate's public types, by name: impls on them are public API, impls on private types
    // are not. By name only, so a private type that shares a public one's name is checked too.
    let mut pub_types = HashSet::new();
    for m in modules {
        for item in &m.items {
            let (vis, ident) = match item {
                syn::Item::Struct(i) => (&i.vis, &i.ident),
                syn::Item::Enum(i) => (&i.vis, &i.ident),
                syn::Item::Union(i) => (&i.vis, &i.ident),
                syn::Item::Type(i) => (&i.vis, &i.ident),
                syn::Item::Trait(i) => (&i.vis, &i.ident),
                _ => continue,
            };
            if is_pub(vis) {
                pub_types.insert(ident.to_string());
            }
        }
    }
    let mut scopes: Vec<Scope> = Vec::with_capacity(modules.len());
    let mut findings = Vec::new();
    for m in modules {
        let parent = m.parent.map(|p| &scopes[p]);
        let scope = Scope::new(&m.items, forbidden, parent);
        let mut checker = Checker {
            scope: &scope,
            pub_types: &pub_types,
            file: &m.file,
            findings: &mut findings,
        };
        for item in &m.items {
            checker.item(item);
        }
        scopes.push(scope);
    }
    findings
}

/// What the names of one module stand for.
#[derive(Default, Clone)]
struct Scope {
    /// The client crates (and wrappers) as this module can name them.
    forbidden: HashSet<String>,
    /// Names brought in from a forbidden crate, and what they stand for.
    client: HashMap<String, String>,
    /// Modules of forbidden crates glob-imported here.
    globs: Vec<String>,
    /// Names declared or imported here that are not the clients'.
    known: HashSet<String>,
}

/// Names every module can use without importing them: primitives and the prelude.
const PRELUDE: &[&str] = &[
    "bool",
    "char",
    "str",
    "u8",
    "u16",
    "u32",
    "u64",
    "u128",
    "usize",
    "i8",
    "i16",
    "i32",
    "i64",
    "i128",
    "isize",
    "f32",
    "f64",
    "Self",
    "Option",
    "Some",
    "None",
    "Result",
    "Ok",
    "Err",
    "Vec",
    "String",
    "Box",
    "Send",
    "Sync",
    "Sized",
    "Unpin",
    "Copy",
    "Clone",
    "Default",
    "Drop",
    "Eq",
    "PartialEq",
    "Ord",
    "PartialOrd",
    "Fn",
    "FnMut",
    "FnOnce",
    "From",
    "Into",
    "TryFrom",
    "TryInto",
    "AsRef",
    "AsMut",
    "Iterator",
    "IntoIterator",
    "Extend",
    "ToOwned",
    "ToString",
    "std",
    "core",
    "alloc",
    "crate",
    "self",
    "super",
];

impl Scope {
    fn new(items: &[syn::Item], forbidden: &HashSet<String>, parent: Option<&Scope>) -> Scope {
        let mut scope = Scope {
            forbidden: forbidden.clone(),
            ..Scope::default()
        };
        let mut imports = Vec::new();
        for item in items {
            match item {
                syn::Item::Use(u) if !is_cfg_test(&u.attrs) => {
                    use_tree(&u.tree, &mut Vec::new(), &mut imports)
                }
                syn::Item::ExternCrate(e) => {
                    let name = e.rename.as_ref().map_or(&e.ident, |(_, r)| r).to_string();
                    imports.push(Import::Name {
                        name,
                        path: vec![e.ident.to_string()],
                    });
                }
                _ => {}
            }
            if let Some(ident) = item_ident(item) {
                scope.known.insert(ident);
            }
        }
        // Twice, so `use redis::aio; use aio::MultiplexedConnection;` resolves in any order.
        for _ in 0..2 {
            for import in &imports {
                match import {
                    Import::Name { name, path } => match scope.resolve(path) {
                        Some(origin) => {
                            scope.client.insert(name.clone(), origin);
                        }
                        None => {
                            scope.known.insert(name.clone());
                        }
                    },
                    Import::Glob { path } if path.first().is_some_and(|s| s == "super") => {
                        if let Some(parent) = parent {
                            scope.client.extend(parent.client.clone());
                            for g in &parent.globs {
                                if !scope.globs.contains(g) {
                                    scope.globs.push(g.clone());
                                }
                            }
                            scope.known.extend(parent.known.iter().cloned());
                        }
                    }
                    Import::Glob { path } => {
                        if let Some(origin) = scope.resolve(path) {
                            if !scope.globs.contains(&origin) {
                                scope.globs.push(origin);
                            }
                        }
                    }
                }
            }
        }
        for name in scope.client.keys() {
            scope.known.remove(name);
        }
        // A private alias of a client type is the client type.
        for item in items {
            if let syn::Item::Type(t) = item {
                if !is_pub(&t.vis) {
                    let mut v = Names::new(&scope, &t.generics);
                    v.visit_type(&t.ty);
                    if let Some(first) = v.found.into_iter().next() {
                        scope.known.remove(&t.ident.to_string());
                        scope.client.insert(t.ident.to_string(), first);
                    }
                }
            }
        }
        scope
    }

    /// What `path` stands for if it leads into a forbidden crate.
    fn resolve(&self, path: &[String]) -> Option<String> {
        let first = path.first()?;
        if self.forbidden.contains(first) {
            return Some(path.join("::"));
        }
        let origin = self.client.get(first)?;
        let mut full = origin.clone();
        for s in &path[1..] {
            full.push_str("::");
            full.push_str(s);
        }
        Some(full)
    }
}

enum Import {
    Name { name: String, path: Vec<String> },
    Glob { path: Vec<String> },
}

fn use_tree(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Import>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_tree(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let (name, path) = if n.ident == "self" {
                (prefix.last().cloned().unwrap_or_default(), prefix.clone())
            } else {
                let mut path = prefix.clone();
                path.push(n.ident.to_string());
                (n.ident.to_string(), path)
            };
            out.push(Import::Name { name, path });
        }
        syn::UseTree::Rename(r) => {
            let mut path = prefix.clone();
            if r.ident != "self" {
                path.push(r.ident.to_string());
            }
            out.push(Import::Name {
                name: r.rename.to_string(),
                path,
            });
        }
        syn::UseTree::Glob(_) => out.push(Import::Glob {
            path: prefix.clone(),
        }),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                use_tree(t, prefix, out);
            }
        }
    }
}

fn item_ident(item: &syn::Item) -> Option<String> {
    let ident = match item {
        syn::Item::Struct(i) => &i.ident,
        syn::Item::Enum(i) => &i.ident,
        syn::Item::Union(i) => &i.ident,
        syn::Item::Type(i) => &i.ident,
        syn::Item::Trait(i) => &i.ident,
        syn::Item::Fn(i) => &i.sig.ident,
        syn::Item::Const(i) => &i.ident,
        syn::Item::Static(i) => &i.ident,
        syn::Item::Mod(i) => &i.ident,
        _ => return None,
    };
    Some(ident.to_string())
}

/// Collects the forbidden types a piece of a signature names.
struct Names<'a> {
    scope: &'a Scope,
    /// The generic parameters in scope: never a client's.
    generics: HashSet<String>,
    found: Vec<String>,
}

impl<'a> Names<'a> {
    fn new(scope: &'a Scope, generics: &syn::Generics) -> Names<'a> {
        let mut n = Names {
            scope,
            generics: HashSet::new(),
            found: Vec::new(),
        };
        n.add_generics(generics);
        n
    }

    fn add_generics(&mut self, generics: &syn::Generics) {
        for p in &generics.params {
            match p {
                syn::GenericParam::Type(t) => self.generics.insert(t.ident.to_string()),
                syn::GenericParam::Const(c) => self.generics.insert(c.ident.to_string()),
                syn::GenericParam::Lifetime(_) => continue,
            };
        }
        self.visit_generics(generics);
    }
}

impl<'ast> Visit<'ast> for Names<'_> {
    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(origin) = self.scope.resolve(&segments) {
            let written = segments.join("::");
            self.found.push(if written == origin {
                origin
            } else {
                format!("{written} (= {origin})")
            });
        } else if let [single] = &segments[..] {
            if !self.scope.globs.is_empty()
                && path.leading_colon.is_none()
                && !self.generics.contains(single)
                && !self.scope.known.contains(single)
                && !PRELUDE.contains(&single.as_str())
            {
                self.found.push(format!(
                    "{single} (maybe from {}::*)",
                    self.scope.globs.join("::*, ")
                ));
            }
        }
        syn::visit::visit_path(self, path);
    }

    // Bodies, macro calls and attributes are not signatures.
    fn visit_block(&mut self, _: &'ast syn::Block) {}
    fn visit_attribute(&mut self, _: &'ast syn::Attribute) {}
    fn visit_macro(&mut self, _: &'ast syn::Macro) {}
}

struct Checker<'a> {
    scope: &'a Scope,
    pub_types: &'a HashSet<String>,
    file: &'a Path,
    findings: &'a mut Vec<Finding>,
}

impl<'a> Checker<'a> {
    fn report(&mut self, span: proc_macro2::Span, item: String, names: Vec<String>) {
        let mut seen = HashSet::new();
        for n in names {
            if seen.insert(n.clone()) {
                self.findings.push(Finding {
                    file: self.file.to_path_buf(),
                    line: span.start().line,
                    item: item.clone(),
                    names: n,
                });
            }
        }
    }

    fn names(&self, generics: &syn::Generics) -> Names<'a> {
        Names::new(self.scope, generics)
    }

    fn item(&mut self, item: &syn::Item) {
        if let Some(attrs) = item_attrs(item) {
            if is_cfg_test(attrs) {
                return;
            }
        }
        let none = syn::Generics::default();
        match item {
            syn::Item::Fn(f) if is_pub(&f.vis) => {
                let mut n = self.names(&none);
                n.add_generics(&f.sig.generics);
                n.visit_signature(&f.sig);
                let found = n.found;
                self.report(f.sig.ident.span(), format!("pub fn {}", f.sig.ident), found);
            }
            syn::Item::Struct(s) if is_pub(&s.vis) => {
                let mut n = self.names(&s.generics);
                for (i, field) in s.fields.iter().enumerate() {
                    if is_pub(&field.vis) {
                        let before = n.found.len();
                        n.visit_type(&field.ty);
                        let found = n.found.split_off(before);
                        let name = field
                            .ident
                            .as_ref()
                            .map_or(i.to_string(), |f| f.to_string());
                        self.report(
                            field.span(),
                            format!("pub struct {}, field {name}", s.ident),
                            found,
                        );
                    }
                }
                let found = n.found;
                self.report(s.ident.span(), format!("pub struct {}", s.ident), found);
            }
            syn::Item::Union(u) if is_pub(&u.vis) => {
                let mut n = self.names(&u.generics);
                for field in &u.fields.named {
                    if is_pub(&field.vis) {
                        n.visit_type(&field.ty);
                    }
                }
                let found = n.found;
                self.report(u.ident.span(), format!("pub union {}", u.ident), found);
            }
            syn::Item::Enum(e) if is_pub(&e.vis) => {
                let mut n = self.names(&e.generics);
                for v in &e.variants {
                    let before = n.found.len();
                    for field in &v.fields {
                        n.visit_type(&field.ty);
                    }
                    let found = n.found.split_off(before);
                    self.report(
                        v.ident.span(),
                        format!("pub enum {}, variant {}", e.ident, v.ident),
                        found,
                    );
                }
                let found = n.found;
                self.report(e.ident.span(), format!("pub enum {}", e.ident), found);
            }
            syn::Item::Type(t) if is_pub(&t.vis) => {
                let mut n = self.names(&t.generics);
                n.visit_type(&t.ty);
                let found = n.found;
                self.report(t.ident.span(), format!("pub type {}", t.ident), found);
            }
            syn::Item::Trait(t) if is_pub(&t.vis) => {
                let mut n = self.names(&t.generics);
                for b in &t.supertraits {
                    n.visit_type_param_bound(b);
                }
                for ti in &t.items {
                    match ti {
                        syn::TraitItem::Fn(f) => {
                            let mut m = self.names(&t.generics);
                            m.add_generics(&f.sig.generics);
                            m.visit_signature(&f.sig);
                            n.found.extend(m.found);
                        }
                        syn::TraitItem::Type(ty) => {
                            for b in &ty.bounds {
                                n.visit_type_param_bound(b);
                            }
                            if let Some((_, default)) = &ty.default {
                                n.visit_type(default);
                            }
                        }
                        syn::TraitItem::Const(c) => n.visit_type(&c.ty),
                        _ => {}
                    }
                }
                let found = n.found;
                self.report(t.ident.span(), format!("pub trait {}", t.ident), found);
            }
            syn::Item::Const(c) if is_pub(&c.vis) => {
                let mut n = self.names(&none);
                n.visit_type(&c.ty);
                let found = n.found;
                self.report(c.ident.span(), format!("pub const {}", c.ident), found);
            }
            syn::Item::Static(s) if is_pub(&s.vis) => {
                let mut n = self.names(&none);
                n.visit_type(&s.ty);
                let found = n.found;
                self.report(s.ident.span(), format!("pub static {}", s.ident), found);
            }
            syn::Item::Use(u) if is_pub(&u.vis) => {
                let mut imports = Vec::new();
                use_tree(&u.tree, &mut Vec::new(), &mut imports);
                let mut found = Vec::new();
                for import in imports {
                    let (Import::Name { path, .. } | Import::Glob { path }) = import;
                    if let Some(origin) = self.scope.resolve(&path) {
                        found.push(origin);
                    }
                }
                self.report(u.span(), "pub use".to_owned(), found);
            }
            syn::Item::ExternCrate(e) if is_pub(&e.vis) => {
                let found: Vec<String> = self
                    .scope
                    .resolve(&[e.ident.to_string()])
                    .into_iter()
                    .collect();
                self.report(e.ident.span(), "pub extern crate".to_owned(), found);
            }
            syn::Item::Impl(i) => self.impl_block(i),
            _ => {}
        }
    }

    fn impl_block(&mut self, i: &syn::ItemImpl) {
        let self_name = type_name(&i.self_ty);
        let generic_self = i.generics.params.iter().any(|p| match p {
            syn::GenericParam::Type(t) => Some(t.ident.to_string()) == self_name,
            _ => false,
        });
        let mut n = self.names(&i.generics);
        n.visit_type(&i.self_ty);
        let self_is_client = !n.found.is_empty();
        // A blanket impl, or one on a type we cannot name, counts as public.
        let public = self_is_client
            || generic_self
            || self_name
                .as_ref()
                .is_none_or(|s| self.pub_types.contains(s));
        if !public {
            return;
        }
        let shown_self = self_name.clone().unwrap_or_else(|| "_".to_owned());
        match &i.trait_ {
            Some((_, trait_path, _)) => {
                n.visit_path(trait_path);
                for item in &i.items {
                    if let syn::ImplItem::Type(t) = item {
                        n.visit_type(&t.ty);
                    }
                }
                let shown_trait = trait_path
                    .segments
                    .last()
                    .map_or(String::new(), |s| s.ident.to_string());
                let found = n.found;
                self.report(
                    i.impl_token.span,
                    format!("impl {shown_trait} for {shown_self}"),
                    found,
                );
            }
            None => {
                // Methods are public only as far as `pub` says; the impl's own generics and self
                // type matter through them.
                let header = n.found;
                let mut any_pub = false;
                for item in &i.items {
                    match item {
                        syn::ImplItem::Fn(f) if is_pub(&f.vis) && !is_cfg_test(&f.attrs) => {
                            any_pub = true;
                            let mut m = self.names(&i.generics);
                            m.add_generics(&f.sig.generics);
                            m.visit_signature(&f.sig);
                            let found = m.found;
                            self.report(
                                f.sig.ident.span(),
                                format!("pub fn {shown_self}::{}", f.sig.ident),
                                found,
                            );
                        }
                        syn::ImplItem::Const(c) if is_pub(&c.vis) => {
                            any_pub = true;
                            let mut m = self.names(&i.generics);
                            m.visit_type(&c.ty);
                            let found = m.found;
                            self.report(
                                c.ident.span(),
                                format!("pub const {shown_self}::{}", c.ident),
                                found,
                            );
                        }
                        _ => {}
                    }
                }
                if any_pub {
                    self.report(i.impl_token.span, format!("impl {shown_self}"), header);
                }
            }
        }
    }
}

fn item_attrs(item: &syn::Item) -> Option<&Vec<syn::Attribute>> {
    Some(match item {
        syn::Item::Fn(i) => &i.attrs,
        syn::Item::Struct(i) => &i.attrs,
        syn::Item::Enum(i) => &i.attrs,
        syn::Item::Union(i) => &i.attrs,
        syn::Item::Type(i) => &i.attrs,
        syn::Item::Trait(i) => &i.attrs,
        syn::Item::Const(i) => &i.attrs,
        syn::Item::Static(i) => &i.attrs,
        syn::Item::Use(i) => &i.attrs,
        syn::Item::Impl(i) => &i.attrs,
        syn::Item::Mod(i) => &i.attrs,
        syn::Item::ExternCrate(i) => &i.attrs,
        _ => return None,
    })
}

/// The name of the type an impl is for: `Foo` for `Foo<T>`, `&Foo`, `crate::x::Foo`.
fn type_name(ty: &syn::Type) -> Option<String> {
    match ty {
        syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        syn::Type::Reference(r) => type_name(&r.elem),
        syn::Type::Paren(p) => type_name(&p.elem),
        syn::Type::Group(g) => type_name(&g.elem),
        _ => None,
    }
}

/// A findings list as text, one `line: item names type` per line (for the tests).
#[cfg(test)]
fn check_source(src: &str, forbidden: &[&str]) -> String {
    use std::fmt::Write as _;

    let file = syn::parse_file(src).expect("test source parses");
    let mut modules = Vec::new();
    add_module(
        Path::new("lib.rs"),
        file.items,
        Path::new("."),
        None,
        &mut modules,
    )
    .expect("inline modules only");
    let forbidden = forbidden.iter().map(|s| (*s).to_owned()).collect();
    let mut out = String::new();
    for f in check_modules(&modules, &forbidden) {
        let _ = writeln!(out, "{}: {} names {}", f.line, f.item, f.names);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENTS: &[&str] = &["redis", "deadpool_redis", "lapin", "dq_redis_conn"];

    fn check(src: &str, expected: &str) {
        assert_eq!(check_source(src, CLIENTS), expected, "source:\n{src}");
    }

    #[test]
    fn public_fns_naming_client_types_fail() {
        check(
            "pub fn f() -> redis::Cmd { todo!() }\n\
             pub fn g(x: Option<&::lapin::Channel>) {}\n",
            "1: pub fn f names redis::Cmd\n\
             2: pub fn g names lapin::Channel\n",
        );
    }

    #[test]
    fn restricted_and_private_items_pass() {
        check(
            "pub(crate) fn f() -> redis::Cmd { todo!() }\n\
             pub(super) fn g() -> redis::Cmd { todo!() }\n\
             fn h(_: deadpool_redis::Pool) {}\n\
             pub fn body_only() { let _ = redis::cmd(\"PING\"); }\n\
             #[cfg(test)] mod tests { pub fn t() -> redis::Cmd { todo!() } }\n",
            "",
        );
    }

    #[test]
    fn imports_renames_groups_and_globs_are_followed() {
        check(
            "use deadpool_redis::{Pool as P, Connection};\n\
             use redis::aio;\n\
             pub fn f(_: P) {}\n\
             pub fn g<T: Into<Connection>>(_: T) {}\n\
             pub fn h() -> aio::MultiplexedConnection { todo!() }\n",
            "3: pub fn f names P (= deadpool_redis::Pool)\n\
             4: pub fn g names Connection (= deadpool_redis::Connection)\n\
             5: pub fn h names aio::MultiplexedConnection (= redis::aio::MultiplexedConnection)\n",
        );
        check(
            "use lapin::types::*;\n\
             pub struct Ours;\n\
             pub fn f<T>(_: T, _: Ours, _: FieldTable) {}\n",
            "3: pub fn f names FieldTable (maybe from lapin::types::*)\n",
        );
    }

    #[test]
    fn private_aliases_and_super_globs_are_followed() {
        check(
            "type Conn = deadpool_redis::Connection;\n\
             mod inner {\n    use super::*;\n    pub fn f() -> Conn { todo!() }\n}\n",
            "4: pub fn f names Conn (= deadpool_redis::Connection)\n",
        );
    }

    #[test]
    fn reexports_fail() {
        check(
            "pub use redis::RedisError;\n\
             pub use dq_redis_conn as conn;\n\
             pub(crate) use lapin::Channel;\n\
             pub use crate::error::Error;\n",
            "1: pub use names redis::RedisError\n\
             2: pub use names dq_redis_conn\n",
        );
    }

    #[test]
    fn public_fields_and_variants_fail_private_fields_pass() {
        check(
            "pub struct S {\n    pub pool: deadpool_redis::Pool,\n    conn: redis::Cmd,\n}\n\
             pub enum E {\n    Client(redis::RedisError),\n}\n\
             enum Private { Client(redis::RedisError) }\n",
            "2: pub struct S, field pool names deadpool_redis::Pool\n\
             6: pub enum E, variant Client names redis::RedisError\n",
        );
    }

    #[test]
    fn impls_on_public_types_fail() {
        check(
            "use redis::RedisError;\n\
             pub enum Error { X }\n\
             impl From<RedisError> for Error { fn from(_: RedisError) -> Error { Error::X } }\n\
             struct Reply;\n\
             impl redis::FromRedisValue for Reply {}\n\
             impl Error {\n    pub fn kind(&self) -> u8 { 0 }\n    pub fn raw(&self) -> &RedisError { todo!() }\n    fn inner(&self) -> RedisError { todo!() }\n}\n\
             pub trait Backend { fn pool(&self) -> &deadpool_redis::Pool; }\n\
             impl Backend for lapin::Channel { fn pool(&self) -> &deadpool_redis::Pool { todo!() } }\n",
            "3: impl From for Error names RedisError (= redis::RedisError)\n\
             8: pub fn Error::raw names RedisError (= redis::RedisError)\n\
             11: pub trait Backend names deadpool_redis::Pool\n\
             12: impl Backend for Channel names lapin::Channel\n",
        );
    }

    #[test]
    fn consts_statics_and_aliases_fail() {
        check(
            "pub const C: Option<redis::Cmd> = None;\n\
             pub static S: Option<lapin::Channel> = None;\n\
             pub type T = redis::Pipeline;\n",
            "1: pub const C names redis::Cmd\n\
             2: pub static S names lapin::Channel\n\
             3: pub type T names redis::Pipeline\n",
        );
    }

    #[test]
    fn the_crate_graph_table_parses() {
        let doc = "# A\n\n## Crate graph\n\nText.\n\n\
                   | crate | depends on | dev-depends on | client types |\n\
                   |---|---|---|---|\n\
                   | any crate | — | `s`, `t` | — |\n\
                   | `a` | — | — | — |\n\
                   | `b` | `a` | `c` | allowed |\n\
                   | `c` | `a`, `b` | — | — |\n\n## Next\n| `x` | | | |\n";
        let map = CrateMap::parse(doc).unwrap();
        assert_eq!(map.any_dev, ["s", "t"].map(String::from).into());
        assert_eq!(map.rows.len(), 3);
        assert!(map.rows["b"].client_types);
        assert_eq!(map.rows["c"].deps, ["a", "b"].map(String::from).into());
        assert_eq!(map.rows["b"].dev, ["c"].map(String::from).into());
        assert!(CrateMap::parse("# no section\n").is_err());
    }

    fn package(name: &str, deps: &[(&str, Kind)]) -> Package {
        Package {
            name: name.to_owned(),
            publish: true,
            lib: None,
            deps: deps.iter().map(|(d, k)| ((*d).to_owned(), *k)).collect(),
            extern_names: HashSet::new(),
        }
    }

    #[test]
    fn graph_edges_must_match_the_table() {
        let doc = "## Crate graph\n\
                   | crate | depends on | dev-depends on | client types |\n\
                   |---|---|---|---|\n\
                   | any crate | — | `t` | — |\n\
                   | `core` | — | — | — |\n\
                   | `leaf` | `core` | `core2` | — |\n\
                   | `t` | `core` | — | — |\n\
                   | `core2` | `core` | — | — |\n";
        let map = CrateMap::parse(doc).unwrap();
        let ok = [
            package("core", &[]),
            package(
                "leaf",
                &[
                    ("core", Kind::Normal),
                    ("t", Kind::Dev),
                    ("core2", Kind::Dev),
                ],
            ),
            package("t", &[("core", Kind::Normal)]),
            package("core2", &[("core", Kind::Normal)]),
        ];
        assert_eq!(check_graph(&map, &ok), Vec::<String>::new());
        let bad = [
            package("core", &[("leaf", Kind::Build)]),
            package("leaf", &[("core", Kind::Normal), ("t", Kind::Normal)]),
            package("t", &[("core", Kind::Normal)]),
            package("core2", &[("core", Kind::Normal)]),
            package("new", &[]),
        ];
        let problems = check_graph(&map, &bad).join("\n");
        assert!(
            problems.contains("edge core -> leaf (build-dependency)"),
            "{problems}"
        );
        assert!(
            problems.contains("edge leaf -> t (dependency)"),
            "{problems}"
        );
        assert!(problems.contains("maps leaf -> core2 (dev)"), "{problems}");
        assert!(problems.contains("crate new has no row"), "{problems}");
        assert_eq!(check_graph(&map, &bad).len(), 4, "{problems}");
    }
}
