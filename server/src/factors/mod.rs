//! The second factors themselves, apart from accounts and HTTP: TOTP codes and their
//! secrets ([`totp`]), recovery codes ([`recovery_codes`]), and the WebAuthn relying party
//! of passkeys ([`passkeys`]).

pub mod passkeys;
pub mod recovery_codes;
pub mod totp;
