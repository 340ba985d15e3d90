//! Rebuilds the crate when a migration is added or changed: `embed_migrations!` reads
//! `sql/` at compile time, and Cargo does not otherwise know it depends on that folder.

fn main() {
    println!("cargo:rerun-if-changed=sql");
}
