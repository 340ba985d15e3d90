//! Email addresses as account names: one spelling per address, and no address that can
//! pass for another.
//!
//! [`normalize`] trims, refuses an over-long input before doing anything else with it,
//! refuses invisible and bidirectional control characters, folds the local part to
//! lower-case Unicode NFKC and the domain to its IDNA (UTS 46) ASCII form, and refuses a
//! local part or domain label that mixes scripts (UTS 39 "highly restrictive": one script,
//! or Latin with Han and Japanese or Korean scripts). Register and login both use it, so
//! every way of writing an address reaches the same account.
//!
//! What it does not catch: a whole-script look-alike (`аре` written entirely in Cyrillic
//! reads as Latin `ape`) and a combining mark that has no precomposed form. Both are
//! visibly distinct in the domain's ASCII form or need a font to hide them; refusing them
//! would refuse real addresses too.

use unicode_normalization::UnicodeNormalization as _;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};
use unicode_security::{RestrictionLevel, RestrictionLevelDetection as _};

/// Longest email accepted, in characters (RFC 5321's path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

/// Why an email is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// More than [`MAX_EMAIL_CHARS`] characters.
    #[error("longer than {MAX_EMAIL_CHARS} characters")]
    TooLong,
    /// A control or format character: zero-width, bidirectional override or isolate, soft
    /// hyphen, byte-order mark, ...
    #[error("holds an invisible or bidirectional control character")]
    Invisible,
    /// A local part or domain label mixing scripts, such as Latin and Cyrillic.
    #[error("mixes scripts in one part")]
    MixedScript,
    /// The domain is not a valid internationalised domain name.
    #[error("the domain is not a valid domain name")]
    Domain,
    /// Not an address (`local@domain`).
    #[error("not an address")]
    NotAnAddress,
    /// A quoted local part that no unquoted one spells (`"a b"@`, `"a@b"@`).
    #[error("a quoted local part that has no unquoted spelling")]
    Quoted,
}

/// The one spelling of `email` that names its account, or why it names none.
pub fn normalize(email: &str) -> Result<String, EmailError> {
    let email = email.trim();
    // Before anything else: nothing below ever sees more than this many characters.
    if email.chars().nth(MAX_EMAIL_CHARS).is_some() {
        return Err(EmailError::TooLong);
    }
    refuse_invisible(email)?;
    let (local, domain) = email.rsplit_once('@').ok_or(EmailError::NotAnAddress)?;
    // `"ada"@example.com` is delivered to `ada@example.com`: one mailbox, one account.
    let local = unquote(local)?;
    let local: String = local
        .nfkc()
        .collect::<String>()
        .to_lowercase()
        .nfkc()
        .collect();
    // UTS 46 maps (lower-case, NFKC) and checks the domain, then spells it in ASCII:
    // `bücher.de` and `xn--bcher-kva.de` are one domain, and a look-alike is visibly
    // `xn--` in the stored address.
    let domain = idna::domain_to_ascii_strict(domain).map_err(|_| EmailError::Domain)?;
    let (unicode_domain, _) = idna::domain_to_unicode(&domain);
    if !single_script(&local) || !unicode_domain.split('.').all(single_script) {
        return Err(EmailError::MixedScript);
    }
    let email = format!("{local}@{domain}");
    refuse_invisible(&email)?;
    if email.chars().count() > MAX_EMAIL_CHARS {
        return Err(EmailError::TooLong);
    }
    if !is_dot_atom(&local) || !email_address::EmailAddress::is_valid(&email) {
        return Err(EmailError::NotAnAddress);
    }
    Ok(email)
}

/// Whether the (normalised) address's domain is a single label (`x@localhost`,
/// `x@intranet`): a name only a local resolver gives meaning to.
pub fn has_single_label_domain(email: &str) -> bool {
    email
        .rsplit_once('@')
        .is_some_and(|(_, domain)| !domain.trim_end_matches('.').contains('.'))
}

/// The local part as the mailbox it delivers to: a quoted string (RFC 5321 §4.1.2) is
/// unquoted, its quoted pairs undone, and kept only when the result is a dot-atom that
/// names the same mailbox unquoted. A quote anywhere else is no address.
fn unquote(local: &str) -> Result<String, EmailError> {
    let Some(inner) = local
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return if local.contains(['"', '\\']) {
            Err(EmailError::NotAnAddress)
        } else {
            Ok(local.to_owned())
        };
    };
    let mut unquoted = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => unquoted.push(chars.next().ok_or(EmailError::Quoted)?),
            '"' => return Err(EmailError::Quoted),
            c => unquoted.push(c),
        }
    }
    if is_dot_atom(&unquoted) {
        Ok(unquoted)
    } else {
        Err(EmailError::Quoted)
    }
}

/// RFC 5322 `dot-atom-text` with RFC 6531's non-ASCII characters: atoms of `atext`
/// joined by single dots, none at either end. No quotes, spaces, comments or `@`.
fn is_dot_atom(local: &str) -> bool {
    let atext =
        |c: char| c.is_ascii_alphanumeric() || !c.is_ascii() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    !local.is_empty()
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext))
}

/// Control characters (Cc) and format characters (Cf: zero-width spaces and joiners,
/// bidirectional marks, overrides and isolates, soft hyphen, BOM, tags).
fn refuse_invisible(text: &str) -> Result<(), EmailError> {
    if text.chars().any(is_invisible) {
        return Err(EmailError::Invisible);
    }
    Ok(())
}

/// Whether `c` is a character a person cannot see or that reorders or breaks what they
/// see: controls (Cc), format characters (Cf: zero-width, bidirectional marks,
/// overrides and isolates, soft hyphen, BOM, tags) and line and paragraph separators
/// (Zl, Zp). Emails and device names refuse them.
pub(crate) fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c.general_category(),
            GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
}

/// Whether `part` is one script (UTS 39 "highly restrictive" at worst) made of characters
/// allowed in identifiers; ASCII punctuation (`.`, `+`, `-`, `_`, ...) belongs to every
/// script.
fn single_script(part: &str) -> bool {
    let letters: String = part.chars().filter(|c| !c.is_ascii_punctuation()).collect();
    matches!(
        letters.as_str().detect_restriction_level(),
        RestrictionLevel::ASCIIOnly
            | RestrictionLevel::SingleScript
            | RestrictionLevel::HighlyRestrictive
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADA: &str = "ada@example.com";

    #[test]
    fn emails_are_trimmed_lowercased_and_checked() {
        assert_eq!(normalize("  Ada@Example.COM ").unwrap(), ADA);
        for bad in ["", "ada", "ada@", "@example.com", "a b@example.com"] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_quoted_local_part_is_the_mailbox_it_delivers_to_or_refused() {
        for quoted in [
            "\"ada\"@example.com",
            "\"Ada\"@Example.com",
            "\"a\\da\"@example.com",
        ] {
            assert_eq!(normalize(quoted).unwrap(), ADA, "{quoted}");
        }
        assert_eq!(
            normalize("\"ada.lovelace\"@example.com").unwrap(),
            "ada.lovelace@example.com"
        );
        for refused in [
            "\"a b\"@example.com",
            "\"a@b\"@example.com",
            "\"a..b\"@example.com",
            "\".ada\"@example.com",
            "\"\"@example.com",
            "a\"da\"@example.com",
            "\"ada@example.com",
            "ada(comment)@example.com",
            "a\\da@example.com",
        ] {
            assert!(normalize(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn single_label_domains_are_told_apart() {
        assert!(has_single_label_domain("x@localhost"));
        assert!(has_single_label_domain("x@intranet"));
        assert!(!has_single_label_domain(ADA));
        assert!(!has_single_label_domain("x@b\u{fc}cher.de"));
    }

    #[test]
    fn an_over_long_email_is_refused_before_it_is_looked_at() {
        let long = format!("{}@x.io", "a".repeat(300));
        assert_eq!(normalize(&long), Err(EmailError::TooLong));
        // 60 KB of garbage is refused as too long, not parsed.
        assert_eq!(
            normalize(&"\u{200b}".repeat(20_000)),
            Err(EmailError::TooLong)
        );
        let (a, b, c) = ("a".repeat(64), "b".repeat(63), "c".repeat(63));
        let at_limit = format!("{a}@{b}.{c}.{}.com", "d".repeat(57));
        assert_eq!(at_limit.chars().count(), MAX_EMAIL_CHARS);
        assert!(normalize(&at_limit).is_ok());
        assert_eq!(normalize(&format!("d{at_limit}")), Err(EmailError::TooLong));
    }

    #[test]
    fn invisible_and_bidirectional_characters_are_refused() {
        for (what, email) in [
            ("zero-width space", "ad\u{200b}a@example.com"),
            ("zero-width joiner", "ad\u{200d}a@example.com"),
            ("zero-width no-break space", "\u{feff}ada@example.com"),
            ("right-to-left override", "\u{202e}moc.elpmaxe@ada"),
            ("left-to-right isolate", "ada@\u{2066}example.com"),
            ("right-to-left mark", "ada\u{200f}@example.com"),
            ("soft hyphen", "ad\u{ad}a@example.com"),
            ("word joiner", "ada@exam\u{2060}ple.com"),
            ("tag character", "ada\u{e0041}@example.com"),
            ("null", "ada\u{0}@example.com"),
        ] {
            assert_eq!(normalize(email), Err(EmailError::Invisible), "{what}");
        }
    }

    #[test]
    fn a_cyrillic_look_alike_is_refused_in_the_local_part_and_the_domain() {
        // U+0430 CYRILLIC SMALL LETTER A among Latin letters.
        assert_eq!(
            normalize("\u{430}da@example.com"),
            Err(EmailError::MixedScript)
        );
        assert_eq!(
            normalize("ada@ex\u{430}mple.com"),
            Err(EmailError::MixedScript)
        );
        // Its punycode spelling is the same domain, refused the same way.
        let punycode = idna::domain_to_ascii("ex\u{430}mple.com").unwrap();
        assert!(punycode.starts_with("xn--"), "{punycode}");
        assert_eq!(
            normalize(&format!("ada@{punycode}")),
            Err(EmailError::MixedScript)
        );
        // Greek omicron in a Latin word, too.
        assert_eq!(
            normalize("b\u{3bf}b@example.com"),
            Err(EmailError::MixedScript)
        );
    }

    #[test]
    fn single_script_addresses_in_other_scripts_are_accepted() {
        assert_eq!(
            normalize("иван@пример.рф").unwrap(),
            "иван@xn--e1afmkfd.xn--p1ai"
        );
        assert!(normalize("δοκιμή@example.com").is_ok());
        // Japanese mixes Han, Hiragana, Katakana and Latin legitimately.
        assert!(normalize("山田たろうTaro@example.jp").is_ok());
        assert!(normalize("ada.lovelace+tag-1_x@example.com").is_ok());
    }

    #[test]
    fn a_combining_accent_and_its_precomposed_letter_are_one_address() {
        let precomposed = normalize("jos\u{e9}@example.com").unwrap();
        let combining = normalize("jose\u{301}@example.com").unwrap();
        assert_eq!(precomposed, combining);
        assert_eq!(normalize("JOSE\u{301}@Example.com").unwrap(), precomposed);
    }

    #[test]
    fn compatibility_forms_and_domains_fold_to_one_spelling() {
        // Fullwidth letters and the fullwidth at sign's neighbours.
        assert_eq!(normalize("ａｄａ@ｅｘａｍｐｌｅ.ｃｏｍ").unwrap(), ADA);
        // The ligature "ﬁ" is "fi".
        assert_eq!(
            normalize("\u{fb01}nn@example.com").unwrap(),
            "finn@example.com"
        );
        assert_eq!(
            normalize("ada@BÜCHER.de").unwrap(),
            normalize("ada@xn--bcher-kva.de").unwrap()
        );
        assert_eq!(normalize("ada@bücher.de").unwrap(), "ada@xn--bcher-kva.de");
    }

    #[test]
    fn invalid_domains_are_refused() {
        for bad in ["ada@exa mple.com", "ada@-example.com", "ada@exam_ple.com"] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
    }
}
