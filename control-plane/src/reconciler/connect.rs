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

/// Opening a node's console WebSocket failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleDialError {
    /// The node answered, without upgrading.
    #[error("refused with {status}: {detail}")]
    Refused {
        /// Its status.
        status: u16,
        /// Its problem's detail (or the start of its body).
        detail: String,
    },
    /// No session: no client, no connection, no TLS.
    #[error("{0}")]
    Failed(String),
}

/// A node's console WebSocket, over TLS pinned to the node's name.
pub type NodeConsole =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl HttpNodes {
    /// Opens the console of VM `vm` on `node` (as its writer with `write`).
    pub async fn console(
        &self,
        node: &Node,
        vm: &str,
        write: bool,
    ) -> Result<NodeConsole, ConsoleDialError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let failed = |e: String| ConsoleDialError::Failed(e);
        let token = self
            .keys
            .issue_to_node(&node.name, NODE_CALL_TOKEN_TTL_SECS)
            .map_err(|e| failed(format!("cannot sign a token for node {}: {e}", node.name)))?;
        let base = node
            .address
            .strip_prefix("https://")
            .ok_or_else(|| failed(format!("node {} is not served over https", node.name)))?;
        let path =
            modvisor_node_api::routes::fill(modvisor_node_api::routes::VM_CONSOLE, &[("id", vm)]);
        let url = format!("wss://{base}{path}?write={write}");
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| failed(format!("{url}: {e}")))?;
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| failed("a token that is not a header value".into()))?;
        request.headers_mut().insert("authorization", bearer);
        modvisor_node_api::tls::install_provider();
        let tls = modvisor_node_api::tls::client_config(&self.ca_pem, &node.name)
            .map_err(|e| failed(format!("TLS to node {}: {e}", node.name)))?;
        let connector = tokio_tungstenite::Connector::Rustls(Arc::new(tls));
        let dial =
            tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector));
        match tokio::time::timeout(Duration::from_secs(10), dial).await {
            Err(_) => Err(failed(format!("{url}: no answer within 10 s"))),
            Ok(Ok((socket, _))) => Ok(socket),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                let status = resp.status().as_u16();
                let body = resp.body().as_deref().unwrap_or_default();
                let detail = serde_json::from_slice::<modvisor_node_api::Problem>(body)
                    .map(|p| p.detail)
                    .unwrap_or_else(|_| String::from_utf8_lossy(body).chars().take(300).collect());
                Err(ConsoleDialError::Refused { status, detail })
            }
            Ok(Err(e)) => Err(failed(format!("{url}: {e}"))),
        }
    }
}
