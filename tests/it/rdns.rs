//! Forward-confirmed reverse DNS: a bot of an operator that documents it (Googlebot) is
//! verified at level `rdns` when its address's PTR name is in the operator's domain and
//! resolves back to the address, against the test's own DNS server; each address is looked up
//! once; the edge's policy can require the level.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ai_cache::app::Role;
use ai_cache::infra::rdns::RdnsSource;
use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, PTR};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use reqwest::Method;
use serde_json::json;

use crate::clients::{create_client, create_key, send};
use crate::harness::{Options, TestApp, eventually};

const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const GPTBOT: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)";

/// A DNS server on UDP answering PTR and A questions from fixed tables, counting questions.
struct FakeDns {
    addr: SocketAddr,
    asked: Arc<Mutex<HashMap<(String, RecordType), usize>>>,
}

impl FakeDns {
    async fn start(ptr: &[(&str, &str)], a: &[(&str, &str)]) -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = socket.local_addr().expect("addr");
        let ptr: HashMap<Name, Name> = ptr
            .iter()
            .map(|(ip, host)| {
                let ip: IpAddr = ip.parse().expect("ip");
                (Name::from(ip), Name::from_ascii(host).expect("name"))
            })
            .collect();
        let a: HashMap<Name, std::net::Ipv4Addr> = a
            .iter()
            .map(|(host, ip)| {
                (
                    Name::from_ascii(host).expect("name"),
                    ip.parse().expect("ip"),
                )
            })
            .collect();
        let asked = Arc::new(Mutex::new(HashMap::new()));
        let log = Arc::clone(&asked);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(question) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut answer = Message::response(question.metadata.id, OpCode::Query);
                answer.metadata.message_type = MessageType::Response;
                answer.metadata.recursion_desired = question.metadata.recursion_desired;
                answer.metadata.recursion_available = true;
                for q in &question.queries {
                    let name = q.name().clone();
                    *log.lock()
                        .expect("lock")
                        .entry((name.to_ascii().to_lowercase(), q.query_type()))
                        .or_insert(0) += 1;
                    let mut key = name.clone();
                    key.set_fqdn(true);
                    let data = match q.query_type() {
                        RecordType::PTR => ptr.get(&key).map(|h| RData::PTR(PTR(h.clone()))),
                        RecordType::A => a.get(&key).map(|ip| RData::A(A(*ip))),
                        _ => None,
                    };
                    answer.add_query(q.clone());
                    match data {
                        Some(data) => {
                            answer.add_answer(Record::from_rdata(name, 60, data));
                        }
                        None if q.query_type() == RecordType::AAAA && a.contains_key(&key) => {}
                        None => answer.metadata.response_code = ResponseCode::NXDomain,
                    }
                }
                if let Ok(bytes) = answer.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        Self { addr, asked }
    }

    fn asked(&self, name: &str, kind: RecordType) -> usize {
        self.asked
            .lock()
            .expect("lock")
            .get(&(name.to_owned(), kind))
            .copied()
            .unwrap_or(0)
    }
}

fn visit(ua: &str, ip: &str) -> serde_json::Value {
    json!({"url": "https://site.test/a", "user_agent": ua, "ip": ip, "referrer": null,
           "timestamp": chrono::Utc::now().to_rfc3339(), "format_served": "html", "status": 200})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_whose_reverse_dns_is_forward_confirmed_is_verified_at_level_rdns() {
    let dns = FakeDns::start(
        &[
            ("66.249.66.1", "crawl-66-249-66-1.googlebot.com."),
            // A name in Google's domain that does not resolve back to the address.
            ("192.0.2.7", "crawl-192-0-2-7.googlebot.com."),
            // A name outside it.
            ("192.0.2.8", "crawl.googlebot.com.evil.test."),
        ],
        &[
            ("crawl-66-249-66-1.googlebot.com.", "66.249.66.1"),
            ("crawl-192-0-2-7.googlebot.com.", "192.0.2.99"),
            ("crawl.googlebot.com.evil.test.", "192.0.2.8"),
        ],
    )
    .await;
    let options = Options {
        rdns_resolver: RdnsSource::Server(dns.addr),
        ..Options::default()
    };
    let app = TestApp::with_options(&[Role::Api, Role::Projections], options).await;
    let client = create_client(&app, "Site", "site.test").await;
    let (_, key) = create_key(&app, &client, &["ingest"]).await;
    let (status, body) = send(
        app.request(Method::POST, "/api/v1/visits/batch")
            .header("X-API-Key", &key)
            .json(&json!({"visits": [
                visit(GOOGLEBOT, "66.249.66.1"),
                visit(GOOGLEBOT, "192.0.2.7"),
                visit(GOOGLEBOT, "192.0.2.8"),
                visit(GPTBOT, "66.249.66.1"),
            ]})),
    )
    .await;
    assert_eq!((status, &body["accepted"]), (200, &json!(4)), "{body}");
    eventually(Duration::from_secs(30), "visits projected", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM visits")
            .fetch_one(app.db())
            .await
            .unwrap_or(0)
            == 4
    })
    .await;
    let mut levels: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT bot_name, ip_hash, verification FROM visits ORDER BY bot_name, verification",
    )
    .fetch_all(app.db())
    .await
    .expect("rows");
    levels.iter_mut().for_each(|l| l.1.clear());
    let levels: Vec<(&str, &str)> = levels
        .iter()
        .map(|(b, _, v)| (b.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        levels,
        [
            ("GPTBot", "claimed"),
            ("Googlebot", "claimed"),
            ("Googlebot", "claimed"),
            ("Googlebot", "rdns"),
        ],
        "only the forward-confirmed Googlebot; OpenAI documents no reverse DNS"
    );
    let (status, stats) = send(app.master(
        Method::GET,
        &format!("/api/v1/clients/{client}/visits/stats?group_by=verification"),
    ))
    .await;
    assert_eq!(status, 200, "{stats}");
    let groups: Vec<(&str, i64)> = stats["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["key"].as_str().expect("key"),
                g["visits"].as_i64().expect("n"),
            )
        })
        .collect();
    assert_eq!(groups, [("claimed", 3), ("rdns", 1)]);
    assert_eq!(
        dns.asked("crawl.googlebot.com.evil.test.", RecordType::A),
        0,
        "a name outside the operator's domains is not followed"
    );

    // The edge's policy can require it, and the answer is remembered: one PTR question.
    let policy = json!({"settings": {"edge": {"rules": [
        {"bot": "Googlebot", "verification": ["claimed", "ip_mismatch"], "action": "block"}]}}});
    let (status, body) = app.put_client(&client, &policy).await;
    assert_eq!(status, 200, "{body}");
    let edge = |ip: &'static str| {
        let app = &app;
        async move {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client")
                .get(format!(
                    "{}/edge/site.test/a",
                    app.api.as_deref().expect("api")
                ))
                .header("user-agent", GOOGLEBOT)
                .header("x-forwarded-for", ip)
                .send()
                .await
                .expect("edge")
                .status()
                .as_u16()
        }
    };
    eventually(Duration::from_secs(15), "the policy applies", || async {
        edge("192.0.2.7").await == 403
    })
    .await;
    assert_eq!(
        edge("66.249.66.1").await,
        302,
        "verified: not blocked (not cached: origin)"
    );
    assert_eq!(edge("66.249.66.1").await, 302);
    assert_eq!(
        dns.asked("1.66.249.66.in-addr.arpa.", RecordType::PTR),
        1,
        "one lookup for the address, however many visits"
    );
}
