//! How the reconciler reaches a node's API: over HTTP with a control-plane token
//! ([`HttpNodes`]), or, in tests of its decisions, any other [`NodeApi`] (a simulated
//! node).

use crate::auth::TokenKeys;
use crate::model::Node;
use modvisor_node_api::{Budgets, NodeApi, NodeClient};
use std::sync::Arc;
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

/// Nodes over HTTP, each call with a fresh token of role `control_plane` whose audience
/// is that node alone.
#[derive(Clone)]
pub struct HttpNodes {
    keys: Arc<TokenKeys>,
    http: reqwest::Client,
    budgets: Budgets,
}

impl HttpNodes {
    /// Clients signing with `keys` and waiting as `budgets` say.
    pub fn new(keys: Arc<TokenKeys>, budgets: Budgets) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(HttpNodes {
            keys,
            http,
            budgets,
        })
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
            self.http.clone(),
            self.budgets,
        ))
    }
}
