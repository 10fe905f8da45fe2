//! Streams as code and the blob store against a real nats-server 2.9.

use ai_cache::domain::content::ContentHash;
use ai_cache::infra::blobs::BlobStore;
use ai_cache::infra::streams::{self, Change};

use crate::harness::TestApp;

#[tokio::test]
async fn applying_the_streams_twice_changes_nothing_the_second_time() {
    let app = TestApp::with_roles(&[]).await;
    // `prepare` applied them once already; the two runs below must both find nothing to do.
    let defs = streams::embedded().expect("definitions");
    for _ in 0..2 {
        let report = streams::apply(app.js(), &defs).await.expect("apply");
        let changed: Vec<_> = report
            .iter()
            .filter(|a| a.change != Change::Unchanged)
            .map(|a| &a.what)
            .collect();
        assert!(changed.is_empty(), "changed on re-apply: {changed:?}");
        assert_eq!(
            report.len(),
            defs.iter().map(|d| 1 + d.consumers.len()).sum::<usize>()
        );
    }
}

#[tokio::test]
async fn a_changed_definition_is_updated_in_place() {
    let app = TestApp::with_roles(&[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("streams");
    copy_dir(&src, dir.path());
    let consumer = dir.path().join("PAGES/consumers/renderer.json");
    let text = std::fs::read_to_string(&consumer).expect("read");
    std::fs::write(
        &consumer,
        text.replace("\"max_deliver\": 6", "\"max_deliver\": 9"),
    )
    .expect("write");

    let report = streams::apply(app.js(), &streams::from_dir(dir.path()).expect("parse"))
        .await
        .expect("apply");
    let changed: Vec<_> = report
        .iter()
        .filter(|a| a.change != Change::Unchanged)
        .map(|a| a.what.as_str())
        .collect();
    assert_eq!(changed, ["consumer PAGES/renderer"]);
    let info = app
        .js()
        .get_stream("PAGES")
        .await
        .expect("stream")
        .consumer_info("renderer")
        .await
        .expect("info");
    assert_eq!(info.config.max_deliver, 9);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

#[tokio::test]
async fn blobs_are_stored_once_by_hash_and_read_back_verified() {
    let app = TestApp::with_roles(&[]).await;
    let blobs = BlobStore::open(app.js(), 4 * 1024 * 1024)
        .await
        .expect("object store on 2.9");
    // Larger than one 128 KiB chunk, so chunking is exercised.
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let first = blobs.put(&content).await.expect("put");
    assert_eq!(first.hash, ContentHash::of(&content));
    assert_eq!(first.size, 300_000);
    let messages_after_first = crate::harness::stream_count(app.js(), "OBJ_blobs", None).await;
    let again = blobs.put(&content).await.expect("put again");
    assert_eq!(again, first);
    assert_eq!(
        crate::harness::stream_count(app.js(), "OBJ_blobs", None).await,
        messages_after_first,
        "second put stored nothing"
    );
    assert_eq!(
        blobs.get(&first.hash).await.expect("get").as_deref(),
        Some(content.as_slice())
    );
    assert_eq!(
        blobs
            .get(&ContentHash::of(b"never stored"))
            .await
            .expect("get"),
        None
    );
}

#[tokio::test]
async fn a_blob_over_the_size_limit_is_refused() {
    let app = TestApp::with_roles(&[]).await;
    let blobs = BlobStore::open(app.js(), 1024).await.expect("open");
    let err = blobs.put(&[0u8; 2048]).await.expect_err("too large");
    assert!(err.to_string().contains("larger than"), "{err}");
}
