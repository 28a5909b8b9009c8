//! `modvisor vm console NAME`: the terminal attached to a VM's serial console through the
//! API's WebSocket, in raw mode; Ctrl-] detaches (as virsh and telnet do).

use crate::client::ApiArgs;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use modvisor_control_plane_api::routes::{fill, VM_CONSOLE};
use nix::sys::termios::{self, SetArg, Termios};
use std::io::{IsTerminal, Read, Write};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The byte of Ctrl-].
const DETACH: u8 = 0x1d;

/// `modvisor vm console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// The VM's name or id.
    pub vm: String,
    /// Watch only (another session may be typing).
    #[arg(long)]
    pub read_only: bool,
}

/// The terminal in raw mode until dropped.
struct RawTerminal(Termios);

impl RawTerminal {
    fn enter() -> Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).context("reading the terminal's mode")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).context("raw mode")?;
        Ok(RawTerminal(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Err(e) = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.0) {
            eprintln!("modvisor: restoring the terminal: {e}");
        }
    }
}

/// Attaches until the session ends or Ctrl-] is typed.
pub fn console(args: &ApiArgs, cmd: ConsoleArgs) -> Result<()> {
    let api = args.client()?;
    let vm = crate::exec_cmd::find_vm(&api, &cmd.vm)?;
    let api_url = args.api_url()?;
    let base = api_url.trim_end_matches('/');
    let ws_base = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        bail!("--api {base}: expected http:// or https://");
    };
    let url = format!(
        "{ws_base}{}?write={}",
        fill(VM_CONSOLE, &[("id", &vm.id)]),
        !cmd.read_only
    );
    let mut request = url.as_str().into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", args.token()?)
            .parse()
            .map_err(|_| anyhow!("the token is not a header value"))?,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let why = rt.block_on(session(request, &vm.spec.name, cmd.read_only))?;
    eprintln!("modvisor: console of {}: {why}", vm.spec.name);
    Ok(())
}

async fn session(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    name: &str,
    read_only: bool,
) -> Result<String> {
    let (mut ws, _) = match tokio_tungstenite::connect_async(request).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_deref().unwrap_or_default();
            let detail = serde_json::from_slice::<modvisor_node_api::Problem>(body)
                .map(|p| p.detail)
                .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
            bail!("{}: {detail}", resp.status());
        }
        Err(e) => return Err(e.into()),
    };
    eprintln!(
        "modvisor: attached to the console of {name}{}; Ctrl-] detaches",
        if read_only { " (read-only)" } else { "" }
    );
    let _raw = if std::io::stdin().is_terminal() {
        Some(RawTerminal::enter()?)
    } else {
        None
    };
    let (tx, mut keys) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(16);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_keys(&tx))?;
    let mut stdout = std::io::stdout();
    let why = loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    stdout.write_all(&b)?;
                    stdout.flush()?;
                }
                Some(Ok(Message::Text(t))) => {
                    stdout.write_all(t.as_bytes())?;
                    stdout.flush()?;
                }
                Some(Ok(Message::Close(frame))) => {
                    break frame
                        .map(|f| format!("closed ({}): {}", u16::from(f.code), f.reason))
                        .unwrap_or_else(|| "closed".into());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break format!("connection lost: {e}"),
                None => break "connection closed".into(),
            },
            key = keys.recv() => match key {
                Some(Some(bytes)) => {
                    if !read_only {
                        ws.send(Message::Binary(bytes.into())).await?;
                    }
                }
                // Ctrl-], or the end of stdin.
                Some(None) | None => {
                    if let Err(e) = ws.close(None).await {
                        eprintln!("\r\nmodvisor: closing: {e}");
                    }
                    break "detached".into();
                }
            },
        }
    };
    Ok(why)
}

/// Reads stdin; sends its bytes, then `None` at Ctrl-] or end of input.
fn read_keys(tx: &tokio::sync::mpsc::Sender<Option<Vec<u8>>>) {
    let mut stdin = std::io::stdin();
    let mut buf = [0u8; 1024];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        let input = &buf[..n];
        let detach = n == 0 || input.contains(&DETACH);
        let before: Vec<u8> = input.iter().copied().take_while(|b| *b != DETACH).collect();
        if !before.is_empty() && tx.blocking_send(Some(before)).is_err() {
            return;
        }
        if detach {
            // The session may have ended already.
            drop(tx.blocking_send(None));
            return;
        }
    }
}
