//! The stand-alone auth server: the library with no application of its own.

/// mimalloc rather than glibc's allocator. First chosen because glibc kept each freed
/// 19 MiB Argon2 block (hundreds of MB after a few hundred logins); Argon2's memory is
/// now pooled (`passwords`), and mimalloc stays for speed: 120 logins cost the release
/// server 30 minor page faults and 24.8–26.7 ms of CPU per login with it, 5,030 faults
/// and 29.1–29.4 ms with glibc (which ends at 55 MB resident against 83 MB).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    portcullis_server::App::standalone().main()
}
