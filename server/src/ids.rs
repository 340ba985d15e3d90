//! The ids of users and sessions, each its own type: a session id cannot be passed where
//! a user id is meant. Both are UUIDs in the database (`users.id`, `sessions.id`) and in
//! access tokens (`sub`, `sid`).

use std::fmt;
use std::str::FromStr;

use postgres_types::{FromSql, ToSql};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ToSql, FromSql)]
        #[postgres(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// The id of this UUID.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID.
            pub const fn as_uuid(self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(text).map(Self)
            }
        }
    };
}

uuid_id!(
    /// A user: an account (`users.id`, the access token's `sub`).
    UserId
);
uuid_id!(
    /// A session: one sign-in of one device (`sessions.id`, the access token's `sid`).
    SessionId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_parse_as_their_uuids() {
        let uuid = Uuid::new_v4();
        let user = UserId::from_uuid(uuid);
        assert_eq!(user.to_string(), uuid.to_string());
        assert_eq!(uuid.to_string().parse::<UserId>().unwrap(), user);
        assert_eq!(user.as_uuid(), uuid);
        assert!("not-a-uuid".parse::<SessionId>().is_err());
    }
}
