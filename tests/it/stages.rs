//! The Markdown and renderer stages after the scraper, against a local origin.

use ai_cache::app::Role;
use ai_cache::domain::content::ContentHash;
use ai_cache::infra::blobs::BlobStore;
use reqwest::Method;
use scraper::{Html, Selector};
use serde_json::json;

use crate::clients::{create_client, send};
use crate::harness::{Options, TestApp};
use crate::page_origin::{Page, PageOrigin};

const ARTICLE: &str = r#"<!doctype html><html lang="fr"><head><title>Un article</title>
<meta name="description" content="De quoi il parle"><script>var tracking = 1;</script></head>
<body><nav><a href="/">Accueil</a></nav><main><article><h1>Un article</h1>
<p>Un premier paragraphe avec <a href="/ailleurs">un lien relatif</a>, assez long pour que
l'extracteur le prenne pour du contenu réel et pas pour un bout de navigation.</p>
<h2>Une section</h2><ul><li>un</li><li>deux</li></ul>
<p>Un dernier paragraphe, lui aussi assez long pour ressembler à de la prose véritable.</p>
</article></main><footer>Pied de page</footer></body></html>"#;

async fn blob(app: &TestApp, hash: &serde_json::Value) -> String {
    let blobs = BlobStore::open(app.js(), 1 << 24).await.expect("blobs");
    let hash = ContentHash::parse(hash.as_str().expect("hash")).expect("hash");
    String::from_utf8(blobs.get(&hash).await.expect("get").expect("stored")).expect("utf-8")
}

#[tokio::test]
async fn a_fetched_page_becomes_markdown_and_minimal_html() {
    let roles = [
        Role::Api,
        Role::Projections,
        Role::Scraper,
        Role::Markdown,
        Role::Renderer,
    ];
    let app = TestApp::with_options(&roles, Options::default()).await;
    let origin = PageOrigin::start().await;
    let client = create_client(&app, "Site", "site.test").await;
    origin.set("/article", Page::html(ARTICLE));
    let url = origin.url("/article");
    let (status, _) = app.post_pages(&client, &json!({"urls": [url]})).await;
    assert_eq!(status, 200);
    let by_url = format!(
        "/api/v1/clients/{client}/pages/by-url?url={}",
        url::form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>()
    );
    let mut page = serde_json::Value::Null;
    for _ in 0..400 {
        page = send(app.master(Method::GET, &by_url)).await.1;
        if page["stage"] == "rendered" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(page["stage"], "rendered", "{page}");
    assert_eq!(
        (page["has_markdown"].as_bool(), page["has_html"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(page["generator"], "local");
    assert_eq!(page["language"], "fr");

    let markdown = blob(&app, &page["markdown_hash"]).await;
    assert!(
        markdown.contains("# Un article") && markdown.contains("## Une section"),
        "{markdown}"
    );
    assert!(
        markdown.contains(&format!("(http://site.test:{}/ailleurs)", origin.port)),
        "links are absolute: {markdown}"
    );
    assert!(
        !markdown.contains("Accueil") && !markdown.contains("tracking"),
        "{markdown}"
    );

    let html = blob(&app, &page["simple_html_hash"]).await;
    let doc = Html::parse_document(&html);
    let one = |css: &str, attr: &str| {
        doc.select(&Selector::parse(css).expect("css"))
            .next()
            .and_then(|e| e.value().attr(attr))
            .map(str::to_owned)
    };
    assert_eq!(one("html", "lang").as_deref(), Some("fr"));
    assert_eq!(
        one("link[rel=canonical]", "href").as_deref(),
        Some(url.as_str())
    );
    assert_eq!(
        one("link[rel=alternate][type='text/markdown']", "href"),
        Some(format!("{url}.md")),
        "the Markdown variant's own URL, as the edge's Link header names it"
    );
    assert_eq!(
        one("meta[name=description]", "content").as_deref(),
        Some("De quoi il parle")
    );
    assert_eq!(
        doc.select(&Selector::parse("script").expect("css")).count(),
        0
    );
}
