//! Token formats and checks: user tokens and the app token.
//!
//! A plaintext token exists only between "generated" and "returned in the response"; the store
//! sees only its SHA-256 hash. Nothing here logs a token, and `Debug` never prints one.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The prefix of every user token. Documented in `proto/backend.md`; never change it, so that a
/// leaked token is recognizable.
pub const USER_TOKEN_PREFIX: &str = "octu_";
/// The prefix of a generated app token.
pub const APP_TOKEN_PREFIX: &str = "octa_";
/// The prefix of a generated admin token.
pub const ADMIN_TOKEN_PREFIX: &str = "octadm_";

/// A freshly generated token, in clear. Only for handing back to the caller once.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainToken(String);

impl PlainToken {
    /// Generates a user token: the prefix and 32 random bytes in hex.
    pub fn user() -> PlainToken {
        PlainToken::generate(USER_TOKEN_PREFIX)
    }

    /// Generates an app token.
    pub fn app() -> PlainToken {
        PlainToken::generate(APP_TOKEN_PREFIX)
    }

    /// Generates an admin token.
    pub fn admin() -> PlainToken {
        PlainToken::generate(ADMIN_TOKEN_PREFIX)
    }

    fn generate(prefix: &str) -> PlainToken {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        PlainToken(format!("{prefix}{}", hex::encode(bytes)))
    }

    /// The hash the store keeps.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }

    /// The token text, to be returned to the caller exactly once.
    pub fn reveal(self) -> String {
        self.0
    }

    /// The token text, borrowed (for printing it once at first start).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PlainToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainToken(..)")
    }
}

/// A secret given by the operator (the app token): `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret text, for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The SHA-256 of a token: what the store keeps and looks up.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Hashes a token presented by a client.
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// Compares in constant time, so that timing tells nothing about the stored hash.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to correlate in a debugger and useless to an attacker.
        write!(f, "TokenHash({}..)", hex::encode(&self.0[..4]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_prefixed_and_hash_stably() {
        let a = PlainToken::user();
        let b = PlainToken::user();
        assert_ne!(a, b);
        assert!(a.expose().starts_with(USER_TOKEN_PREFIX));
        assert_eq!(a.expose().len(), USER_TOKEN_PREFIX.len() + 64);
        assert!(a.hash().matches(&TokenHash::of(a.expose())));
        assert!(!a.hash().matches(&b.hash()));
        assert_eq!(format!("{a:?}"), "PlainToken(..)");
    }
}
