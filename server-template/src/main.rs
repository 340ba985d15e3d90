//! The binary: the command line of the app `portcullis_template::app` describes (`serve`
//! by default, `migrate`, `config`, `sessions …`; `--help` lists them).

/// mimalloc rather than glibc's allocator: Argon2's 19 MiB blocks fragment glibc's heap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    portcullis_template::app().main()
}
