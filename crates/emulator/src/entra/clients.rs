//! The tenant's app registrations (clients): their secrets (kept as SHA-256 digests only), their
//! federated identity credentials, and the data-plane roles their service principals hold on
//! the emulated ACS resource. Pure and synchronous; `Entra` keeps it behind one mutex.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jiff::Timestamp;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The audience a federated credential expects unless it names another (what AKS and the
/// Azure portal use).
pub const DEFAULT_FEDERATED_AUDIENCE: &str = "api://AzureADTokenExchange";

/// An Azure RBAC role that grants the Identity data-plane actions on an ACS resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    #[serde(rename = "Contributor")]
    Contributor,
    #[serde(rename = "Communication and Email Service Owner")]
    CommunicationAndEmailServiceOwner,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Contributor, Role::CommunicationAndEmailServiceOwner];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Contributor => "Contributor",
            Role::CommunicationAndEmailServiceOwner => "Communication and Email Service Owner",
        }
    }

    /// The role by its exact display name (role names are matched as Azure shows them).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A federated identity credential: Entra accepts an assertion whose `iss` and `sub` equal
/// these exactly (case-sensitive) and whose `aud` contains the audience.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FederatedCredential {
    pub issuer: String,
    pub subject: String,
    pub audience: String,
}

/// One app registration and its service principal.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Client {
    /// The application (client) id.
    pub client_id: Uuid,
    /// The service principal's object id (`oid` of its tokens, the principal roles are given to).
    pub object_id: Uuid,
    pub display_name: String,
    /// Standard base64 of the SHA-256 of the client secret; the secret itself is never kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_sha256: Option<String>,
    #[serde(default)]
    pub federated: Vec<FederatedCredential>,
    #[serde(default)]
    pub roles: Vec<Role>,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id)
            .field("display_name", &self.display_name)
            .field("has_secret", &self.secret_sha256.is_some())
            .field("federated", &self.federated)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Whether `presented` is this client's secret (digests compared in constant time).
    pub fn secret_matches(&self, presented: &str) -> bool {
        let Some(stored) = self.secret_sha256.as_deref() else {
            return false;
        };
        let Ok(stored) = STANDARD.decode(stored) else {
            return false;
        };
        let presented = Sha256::digest(presented.as_bytes());
        stored.len() == presented.len()
            && stored
                .iter()
                .zip(presented.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// Whether the principal holds a role that grants the Identity data-plane actions.
    pub fn is_authorized(&self) -> bool {
        !self.roles.is_empty()
    }
}

/// What the admin API asks for when it registers a client.
#[derive(Debug, Clone, Default)]
pub struct NewClient {
    pub display_name: String,
    pub secret: bool,
    pub federated: Vec<FederatedCredential>,
    pub roles: Vec<Role>,
}

/// Every registered client, in registration order.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    clients: Vec<Client>,
}

impl Registry {
    pub fn new(clients: Vec<Client>) -> Self {
        Self { clients }
    }

    pub fn list(&self) -> &[Client] {
        &self.clients
    }

    pub fn get(&self, client_id: Uuid) -> Option<&Client> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }

    /// Registers a client; returns it and, when asked for, its secret (shown only this once).
    pub fn create(&mut self, new: NewClient, now: Timestamp) -> (Client, Option<String>) {
        let secret = new.secret.then(generate_secret);
        let mut roles = new.roles;
        roles.sort();
        roles.dedup();
        let client = Client {
            client_id: Uuid::new_v4(),
            object_id: Uuid::new_v4(),
            display_name: new.display_name,
            secret_sha256: secret
                .as_deref()
                .map(|s| STANDARD.encode(Sha256::digest(s.as_bytes()))),
            federated: new.federated,
            roles,
            created_at: now,
        };
        self.clients.push(client.clone());
        (client, secret)
    }

    /// Deletes a client (its tokens stop authorizing at once); `false` if there was none.
    pub fn delete(&mut self, client_id: Uuid) -> bool {
        let before = self.clients.len();
        self.clients.retain(|c| c.client_id != client_id);
        self.clients.len() != before
    }

    /// Replaces the roles of a client's principal; `None` if there is no such client.
    pub fn set_roles(&mut self, client_id: Uuid, mut roles: Vec<Role>) -> Option<&Client> {
        roles.sort();
        roles.dedup();
        let client = self.clients.iter_mut().find(|c| c.client_id == client_id)?;
        client.roles = roles;
        Some(client)
    }
}

/// A 40-character secret shaped like Entra's (`xxx8Q~` and 34 more characters).
fn generate_secret() -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const BODY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.~-";
    let mut rng = rand::rng();
    let mut s = String::with_capacity(40);
    for _ in 0..3 {
        s.push(char::from(ALNUM[rng.random_range(0..ALNUM.len())]));
    }
    s.push_str("8Q~");
    for _ in 0..34 {
        s.push(char::from(BODY[rng.random_range(0..BODY.len())]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_kept_as_digests_and_checked() {
        let mut r = Registry::default();
        let (c, secret) = r.create(
            NewClient {
                display_name: "app".into(),
                secret: true,
                ..NewClient::default()
            },
            Timestamp::now(),
        );
        let secret = secret.unwrap();
        assert_eq!(secret.len(), 40);
        assert_eq!(&secret[3..6], "8Q~");
        assert!(c.secret_matches(&secret));
        assert!(!c.secret_matches("wrong"));
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains(&secret));
        assert!(!format!("{c:?}").contains(c.secret_sha256.as_deref().unwrap()));
        let (no_secret, none) = r.create(NewClient::default(), Timestamp::now());
        assert!(none.is_none());
        assert!(!no_secret.secret_matches(""));
    }

    #[test]
    fn roles_are_deduplicated_replaced_and_gone_with_the_client() {
        let mut r = Registry::default();
        let (c, _) = r.create(
            NewClient {
                roles: vec![Role::Contributor, Role::Contributor],
                ..NewClient::default()
            },
            Timestamp::now(),
        );
        assert_eq!(c.roles, [Role::Contributor]);
        assert!(c.is_authorized());
        let updated = r.set_roles(c.client_id, Vec::new()).unwrap();
        assert!(!updated.is_authorized());
        assert!(r.delete(c.client_id));
        assert!(!r.delete(c.client_id));
        assert!(r.get(c.client_id).is_none());
        assert_eq!(
            Role::parse("Communication and Email Service Owner"),
            Some(Role::CommunicationAndEmailServiceOwner)
        );
        assert_eq!(Role::parse("contributor"), None);
    }
}
