//! A loopback JSON-RPC proxy in front of anvil that answers as FISCO BCOS's
//! web3 endpoint does, and, given a tamper hook, as a hostile endpoint
//! would.
//!
//! As FISCO BCOS (≥ 3.16, web3 RPC on): `eth_getLogs` answers at most 10
//! blocks per call and drops the rest of the range without saying so;
//! `eth_feeHistory`, `eth_sendTransaction` and `eth_sign` do not exist. The
//! tamper hook sees each call's method and parameters and may rewrite the
//! answer (drop logs, change the chain id, strip a receipt's logs).
//!
//! HTTP/1.1 with `Content-Length` bodies and keep-alive, which is what the
//! EVM client sends; headers and bodies are bounded before they are read.

use std::sync::Arc;

use alloy::transports::http::reqwest;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Rewrites an answer: `(method, params, answer)`.
pub type Tamper = Arc<dyn Fn(&str, &Value, &mut Value) + Send + Sync>;

/// Blocks FISCO BCOS answers per `eth_getLogs` call.
pub const LOG_RANGE_BLOCKS: u64 = 10;
const MAX_HEADER_BYTES: usize = 64 * 1024;
const MAX_BODY_BYTES: usize = 16 << 20;

/// The running proxy; stopped when dropped.
#[derive(Debug)]
pub struct FiscoProxy {
    /// Its JSON-RPC endpoint.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl FiscoProxy {
    /// Starts a proxy to `upstream` on a free loopback port.
    pub async fn start(upstream: &str, tamper: Option<Tamper>) -> Self {
        Self::start_with(upstream, tamper, None).await
    }

    /// The same proxy behind TLS (`https://localhost:…`), with `acceptor`'s
    /// certificate, as an endpoint across a network is reached.
    pub async fn start_tls(upstream: &str, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        Self::start_with(upstream, None, Some(acceptor)).await
    }

    async fn start_with(upstream: &str, tamper: Option<Tamper>, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let port = listener.local_addr().expect("bound").port();
        let url = match tls {
            Some(_) => format!("https://localhost:{port}"),
            None => format!("http://127.0.0.1:{port}"),
        };
        let client = plain_http_client();
        let upstream = upstream.to_owned();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (client, upstream, tamper, tls) = (client.clone(), upstream.clone(), tamper.clone(), tls.clone());
                tokio::spawn(async move {
                    let _ = match tls {
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => serve(stream, &client, &upstream, tamper.as_ref()).await,
                            Err(e) => Err(e),
                        },
                        None => serve(stream, &client, &upstream, tamper.as_ref()).await,
                    };
                });
            }
        });
        Self { url, task }
    }
}

/// A client for plain-http endpoints (anvil): its TLS trusts nothing, and
/// it needs no process-wide TLS provider.
pub fn plain_http_client() -> reqwest::Client {
    let plain = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder().tls_backend_preconfigured(plain).build().expect("an HTTP client")
}

impl Drop for FiscoProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn invalid(reason: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, reason.to_owned())
}

async fn serve(
    stream: impl AsyncRead + AsyncWrite + Unpin,
    client: &reqwest::Client,
    upstream: &str,
    tamper: Option<&Tamper>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let (mut length, mut header_bytes) = (None, line.len());
        loop {
            line.clear();
            let n = reader.read_line(&mut line).await?;
            header_bytes += n;
            if n == 0 || header_bytes > MAX_HEADER_BYTES {
                return Err(invalid("headers too long or cut short"));
            }
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse::<usize>().ok();
            }
        }
        let length = length.filter(|l| *l <= MAX_BODY_BYTES).ok_or_else(|| invalid("no or too long a body"))?;
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        let request: Value = serde_json::from_slice(&body).map_err(|_| invalid("not JSON"))?;
        let answer = match request {
            Value::Array(calls) => {
                let mut answers = Vec::with_capacity(calls.len());
                for call in calls {
                    answers.push(answer(client, upstream, tamper, call).await);
                }
                Value::Array(answers)
            }
            call => answer(client, upstream, tamper, call).await,
        };
        let bytes = serde_json::to_vec(&answer).map_err(|_| invalid("unencodable answer"))?;
        let head =
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", bytes.len());
        let stream = reader.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&bytes).await?;
        stream.flush().await?;
    }
}

async fn answer(client: &reqwest::Client, upstream: &str, tamper: Option<&Tamper>, mut call: Value) -> Value {
    let method = call["method"].as_str().unwrap_or_default().to_owned();
    if matches!(method.as_str(), "eth_feeHistory" | "eth_sendTransaction" | "eth_sign") {
        let message = format!("the method {method} does not exist/is not available");
        return json!({ "jsonrpc": "2.0", "id": call["id"], "error": { "code": -32601, "message": message } });
    }
    if method == "eth_getLogs" {
        clip(&mut call["params"][0]);
    }
    let upstream_answer = client
        .post(upstream)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&call).expect("a JSON value encodes"))
        .send()
        .await;
    let mut answer = match upstream_answer {
        Ok(response) => match response.bytes().await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        },
        Err(_) => Value::Null,
    };
    if let Some(tamper) = tamper {
        tamper(&method, &call["params"], &mut answer);
    }
    answer
}

fn block_number(v: &Value) -> Option<u64> {
    u64::from_str_radix(v.as_str()?.strip_prefix("0x")?, 16).ok()
}

/// Cuts a filter's range to its first [`LOG_RANGE_BLOCKS`] blocks, silently.
fn clip(filter: &mut Value) {
    if let (Some(from), Some(to)) = (block_number(&filter["fromBlock"]), block_number(&filter["toBlock"]))
        && to >= from + LOG_RANGE_BLOCKS
    {
        filter["toBlock"] = json!(format!("0x{:x}", from + LOG_RANGE_BLOCKS - 1));
    }
}
