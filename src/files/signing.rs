//! Signed download URLs: `…?exp=<ms>&sig=<hex>` works without a token until `exp`, so a
//! browser can put it in an `<img src>`. The signature is HMAC-SHA256 over the file id, which
//! variant (the file or its preview) and the expiry, with a key kept in the store.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::protocol::Millis;

type HmacSha256 = Hmac<Sha256>;

/// Which bytes of a file a URL serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The file itself.
    Data,
    /// The image preview.
    Thumb,
}

impl Variant {
    fn tag(self) -> &'static str {
        match self {
            Variant::Data => "data",
            Variant::Thumb => "thumb",
        }
    }
}

/// Signs and checks download URLs.
#[derive(Clone)]
pub struct UrlSigner {
    key: [u8; 32],
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("UrlSigner").finish_non_exhaustive()
    }
}

impl UrlSigner {
    /// A signer with this key.
    pub fn new(key: [u8; 32]) -> UrlSigner {
        UrlSigner { key }
    }

    fn mac(&self, id: &str, variant: Variant, exp: Millis) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b"\n");
        mac.update(variant.tag().as_bytes());
        mac.update(b"\n");
        mac.update(exp.to_string().as_bytes());
        mac
    }

    /// The query string (`exp=…&sig=…`) that lets anyone fetch `variant` of `id` until `exp`.
    pub fn query(&self, id: &str, variant: Variant, exp: Millis) -> String {
        let sig = hex::encode(self.mac(id, variant, exp).finalize().into_bytes());
        format!("exp={exp}&sig={sig}")
    }

    /// Whether `sig` signs `variant` of `id` until `exp`, and `exp` is still ahead of `now`.
    /// The comparison takes constant time.
    pub fn verify(&self, id: &str, variant: Variant, exp: Millis, sig: &str, now: Millis) -> bool {
        let Ok(sig) = hex::decode(sig) else {
            return false;
        };
        let valid = self.mac(id, variant, exp).verify_slice(&sig).is_ok();
        valid && now < exp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(query: &str) -> (Millis, String) {
        let (exp, sig) = query.split_once('&').unwrap();
        (
            exp.trim_start_matches("exp=").parse().unwrap(),
            sig.trim_start_matches("sig=").to_string(),
        )
    }

    #[test]
    fn a_signature_covers_id_variant_and_expiry() {
        let signer = UrlSigner::new([7; 32]);
        let (exp, sig) = parts(&signer.query("f_1", Variant::Data, 2_000));
        assert!(signer.verify("f_1", Variant::Data, exp, &sig, 1_000));
        assert!(
            !signer.verify("f_1", Variant::Data, exp, &sig, 2_000),
            "expired"
        );
        assert!(
            !signer.verify("f_2", Variant::Data, exp, &sig, 1_000),
            "other file"
        );
        assert!(
            !signer.verify("f_1", Variant::Thumb, exp, &sig, 1_000),
            "other variant"
        );
        assert!(
            !signer.verify("f_1", Variant::Data, exp + 1, &sig, 1_000),
            "other expiry"
        );
        assert!(
            !signer.verify("f_1", Variant::Data, exp, "zz", 1_000),
            "not hex"
        );
        let other = UrlSigner::new([8; 32]);
        assert!(
            !other.verify("f_1", Variant::Data, exp, &sig, 1_000),
            "other key"
        );
    }
}
