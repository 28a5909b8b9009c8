//! How the reconciler reaches a node's API: over HTTPS with a control-plane token
//! ([`HttpNodes`]), or, in tests of its decisions, any other [`NodeApi`] (a simulated
//! node).

use crate::auth::TokenKeys;
use crate::model::Node;
use modvisor_node_api::{Budgets, NodeApi, NodeClient};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Lifetime of the token the control plane presents to a node, in seconds.
const NODE_CALL_TOKEN_TTL_SECS: u64 = 300;

/// Gives the reconciler a client of one node's API.
pub trait NodeConnector: Clone + 'static {
    /// The client.
    type Api: NodeApi + 'static;
    /// A client of `node`, or why there is none.
    fn connect(&self, node: &Node) -> Result<Self::Api, String>;
}

/// Nodes over HTTPS, each call with a fresh token of role `control_plane` whose audience
/// is that node alone, each node verified by its name in a certificate of our CA.
#[derive(Clone)]
pub struct HttpNodes {
    keys: Arc<TokenKeys>,
    ca_pem: Arc<str>,
    /// One client (and connection pool) per node name: its TLS checks that name.
    clients: Arc<Mutex<HashMap<String, reqwest::Client>>>,
    budgets: Budgets,
}

impl HttpNodes {
    /// Clients signing with `keys`, trusting the CA `ca_pem`, waiting as `budgets` say.
    pub fn new(keys: Arc<TokenKeys>, ca_pem: &str, budgets: Budgets) -> Self {
        HttpNodes {
            keys,
            ca_pem: ca_pem.into(),
            clients: Arc::new(Mutex::new(HashMap::new())),
            budgets,
        }
    }

    fn client(&self, node: &str) -> Result<reqwest::Client, String> {
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| "the node client table is poisoned".to_string())?;
        if let Some(c) = clients.get(node) {
            return Ok(c.clone());
        }
        modvisor_node_api::tls::install_provider();
        let tls = modvisor_node_api::tls::client_config(&self.ca_pem, node)
            .map_err(|e| format!("TLS to node {node}: {e}"))?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| format!("a client of node {node}: {e}"))?;
        clients.insert(node.to_string(), client.clone());
        Ok(client)
    }
}

impl NodeConnector for HttpNodes {
    type Api = NodeClient;

    fn connect(&self, node: &Node) -> Result<NodeClient, String> {
        let token = self
            .keys
            .issue_to_node(&node.name, NODE_CALL_TOKEN_TTL_SECS)
            .map_err(|e| format!("cannot sign a token for node {}: {e}", node.name))?;
        Ok(NodeClient::new(
            &node.address,
            token,
            self.client(&node.name)?,
            self.budgets,
        ))
    }
}
