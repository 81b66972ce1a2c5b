//! [`Identity`]: what the upgrade layers learned about a client.

use std::sync::Arc;

/// What the upgrade layers learned about a client: for now its user id,
/// set by an auth layer such as [`ApiKey`](super::ApiKey).
///
/// [`UpgradeLayers::check`](super::UpgradeLayers::check) starts from the
/// default (anonymous) identity and returns it once every layer has
/// passed; the `shardcast.v1` layer keeps it per connection and uses the
/// user id as the member id in presence. It is small (16 bytes) and the id
/// is shared, so cloning it for presence lists or other shards costs a
/// reference count, not a copy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Identity {
    user_id: Option<Arc<str>>,
}

impl Identity {
    /// The client's user id, if an auth layer set one.
    #[must_use]
    pub fn user_id(&self) -> Option<&Arc<str>> {
        self.user_id.as_ref()
    }

    /// Sets the client's user id; a later layer's id replaces an earlier
    /// one's.
    pub fn set_user_id(&mut self, user_id: impl Into<Arc<str>>) {
        self.user_id = Some(user_id.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_anonymous_until_a_layer_names_it() {
        let mut identity = Identity::default();
        assert_eq!(identity.user_id(), None);
        identity.set_user_id("alice");
        identity.set_user_id(String::from("bob"));
        assert_eq!(identity.user_id().map(|id| &**id), Some("bob"));
    }

    #[test]
    fn the_size_is_pinned_at_16_bytes() {
        assert_eq!(size_of::<Identity>(), 16);
    }
}
