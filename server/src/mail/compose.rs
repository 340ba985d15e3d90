//! The text of each account mail. Plain text only: nothing in a mail runs or loads
//! anything, and every link is on a line of its own.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::origin::PublicOrigin;

/// What a mail is about: the outbox's `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    /// "Confirm your address", sent at registration and on request.
    EmailVerification,
    /// "Reset your password", sent on request.
    PasswordReset,
    /// "A new sign-in to your account".
    SignInAlert,
    /// "A second factor was added, removed, or a recovery code used".
    FactorChange,
}

impl MailKind {
    /// The column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EmailVerification => "email_verification",
            Self::PasswordReset => "password_reset",
            Self::SignInAlert => "sign_in_alert",
            Self::FactorChange => "factor_change",
        }
    }
}

/// A mail ready for the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    /// What it is about.
    pub kind: MailKind,
    /// Its subject line.
    pub subject: String,
    /// Its text.
    pub body: String,
}

/// The path of the page a verification link opens.
pub const VERIFY_PAGE: &str = "/account/verify";
/// The path of the page a reset link opens.
pub const RESET_PAGE: &str = "/account/reset";
/// The path of the account page a sign-in alert links to.
pub const ACCOUNT_PAGE: &str = "/account";
/// The account page's fragment that a sign-in alert links to: the page says what to do.
pub const NEW_SIGN_IN: &str = "new-sign-in";
/// The account page's fragment that opens "Forgot password?".
pub const FORGOT_PASSWORD: &str = "forgot";

/// The link to `page` carrying `token`: `{PUBLIC_URL}{page}?token=…`. The token is
/// base64url, which needs no escaping in a query.
pub fn token_link(public: &PublicOrigin, page: &str, token: &str) -> String {
    format!("{}{page}?token={token}", public.as_str())
}

/// The mail asking the owner to confirm the address.
pub fn email_verification(link: &str, ttl: Duration) -> Composed {
    Composed {
        kind: MailKind::EmailVerification,
        subject: "Confirm your email address".to_owned(),
        body: format!(
            "Hello,\n\nplease confirm that this address is yours by opening this link and \
             pressing the button on the page:\n\n{link}\n\nThe link works once, for {}. If you \
             did not create an account, ignore this mail.\n",
            lifetime(ttl)
        ),
    }
}

/// The mail with a password-reset link.
pub fn password_reset(link: &str, ttl: Duration) -> Composed {
    Composed {
        kind: MailKind::PasswordReset,
        subject: "Reset your password".to_owned(),
        body: format!(
            "Hello,\n\nsomeone (hopefully you) asked to reset the password of your account. \
             To choose a new password, open this link:\n\n{link}\n\nThe link works once, for \
             {}. Setting a new password signs out every device. If you did not ask for this, \
             ignore this mail: your password stays as it is.\n",
            lifetime(ttl)
        ),
    }
}

/// The mail telling the owner of a sign-in from a new device and network.
pub fn sign_in_alert(
    public: &PublicOrigin,
    device_label: Option<&str>,
    ip: IpAddr,
    at: SystemTime,
) -> Composed {
    let device = device_label.unwrap_or("An unrecognised device");
    Composed {
        kind: MailKind::SignInAlert,
        subject: "New sign-in to your account".to_owned(),
        body: format!(
            "Hello,\n\nyour account was just signed in to from a device and network it was \
             not used from before:\n\n{device}, from {ip}, at {} UTC\n\nIf this was you, \
             there is nothing to do. If not, sign in on your account page, sign that device \
             out and change your password:\n\n{origin}{ACCOUNT_PAGE}#{NEW_SIGN_IN}\n\nIf \
             you cannot sign in any more, set a new password with a link we mail you:\n\n\
             {origin}{ACCOUNT_PAGE}#{FORGOT_PASSWORD}\n",
            humantime::format_rfc3339_seconds(at)
                .to_string()
                .trim_end_matches('Z')
                .replace('T', " "),
            origin = public.as_str()
        ),
    }
}

/// What happened to an account's second factors, as the owner is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactorChange {
    /// A factor of this kind (`an authenticator app`, `a passkey`) was added.
    Added(&'static str),
    /// One was removed.
    Removed(&'static str),
    /// A recovery code was used to sign in or step up.
    RecoveryCodeUsed,
    /// New recovery codes replaced the old.
    RecoveryCodesRegenerated,
}

/// The mail telling the owner of a change to the account's second factors, made `at`.
pub fn factor_change(public: &PublicOrigin, change: FactorChange, at: SystemTime) -> Composed {
    let (subject, what) = match change {
        FactorChange::Added(kind) => (
            "A second factor was added to your account".to_owned(),
            format!("{kind} was added as a second factor of your account"),
        ),
        FactorChange::Removed(kind) => (
            "A second factor was removed from your account".to_owned(),
            format!("{kind} was removed from the second factors of your account"),
        ),
        FactorChange::RecoveryCodeUsed => (
            "A recovery code of your account was used".to_owned(),
            "one of your recovery codes was used in place of a second factor".to_owned(),
        ),
        FactorChange::RecoveryCodesRegenerated => (
            "New recovery codes for your account".to_owned(),
            "new recovery codes were made for your account; the old ones no longer work".to_owned(),
        ),
    };
    Composed {
        kind: MailKind::FactorChange,
        subject,
        body: format!(
            "Hello,\n\n{what}, at {}.\n\nIf this was you, there is nothing to do. If not, \
             sign in, change your password and review your second factors and sessions \
             at once:\n\n{}{ACCOUNT_PAGE}\n",
            humantime::format_rfc3339_seconds(at)
                .to_string()
                .trim_end_matches('Z')
                .replace('T', " ")
                + " UTC",
            public.as_str()
        ),
    }
}

/// `ttl` in words: "30 minutes", "1 day", in the largest unit that divides it.
fn lifetime(ttl: Duration) -> String {
    let seconds = ttl.as_secs();
    let (n, unit) = [(86_400, "day"), (3_600, "hour"), (60, "minute")]
        .into_iter()
        .find(|(size, _)| seconds >= *size && seconds.is_multiple_of(*size))
        .map_or((seconds, "second"), |(size, unit)| (seconds / size, unit));
    let plural = if n == 1 { "" } else { "s" };
    format!("{n} {unit}{plural}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_on_their_own_line_under_the_public_origin() {
        let public = PublicOrigin::parse("https://auth.example.com").unwrap();
        let link = token_link(&public, RESET_PAGE, "abc_-");
        assert_eq!(link, "https://auth.example.com/account/reset?token=abc_-");
        let mail = password_reset(&link, Duration::from_secs(1800));
        assert!(mail.body.contains(&format!("\n{link}\n")), "{}", mail.body);
        assert!(mail.body.contains("for 30 minutes"), "{}", mail.body);
        assert_eq!(lifetime(Duration::from_secs(86_400)), "1 day");
        assert_eq!(lifetime(Duration::from_secs(7_200)), "2 hours");
        assert_eq!(lifetime(Duration::from_secs(90)), "90 seconds");
        assert_eq!(lifetime(Duration::from_secs(1)), "1 second");
    }

    #[test]
    fn the_alert_names_device_network_and_time() {
        let public = PublicOrigin::parse("https://auth.example.com").unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mail = sign_in_alert(
            &public,
            Some("Firefox 131 on Linux"),
            "203.0.113.7".parse().unwrap(),
            at,
        );
        assert!(
            mail.body
                .contains("Firefox 131 on Linux, from 203.0.113.7, at 2023-11-14 22:13:20 UTC"),
            "{}",
            mail.body
        );
        // The links land where the user can act: the page says what to do, or opens the
        // reset form for someone who cannot sign in any more.
        assert!(
            mail.body
                .contains("https://auth.example.com/account#new-sign-in\n")
        );
        assert!(
            mail.body
                .contains("https://auth.example.com/account#forgot\n")
        );
    }
}
