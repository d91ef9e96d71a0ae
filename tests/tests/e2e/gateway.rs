//! The public entry: nginx from the shipped template in front of API replica
//! processes that a real DNS server announces, as Docker's DNS does for
//! `--scale`. Each test prints the figure it measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use evergreen_tests::client::{Api, expect_problem};
use evergreen_tests::gateway::Gateway;
use evergreen_tests::wait;
use futures_util::future::join_all;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nginx_spreads_requests_over_every_replica() {
    let gateway = Gateway::start(3).await;
    let api = Api::new(&gateway.nginx.base_url());
    // nginx caches a DNS answer for 5 s: wait until it has seen all three.
    wait::until(
        "nginx to know every replica",
        Duration::from_secs(20),
        || async {
            api.list_products("?limit=1").await;
            (gateway.nginx.requests_by_upstream().len() == 3).then_some(())
        },
    )
    .await;
    let before = gateway.nginx.requests_by_upstream();

    for _ in 0..30 {
        let batch = join_all((0..10).map(|_| api.list_products("?limit=1"))).await;
        assert!(batch.iter().all(|r| r.status() == StatusCode::OK));
    }

    let after = gateway.nginx.requests_by_upstream();
    let served: Vec<(String, usize)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .collect();
    println!("requests per replica through nginx (300 sent): {served:?}");
    assert_eq!(served.len(), 3, "every replica must serve: {served:?}");
    for (replica, count) in &served {
        // A fair share is 100; nginx starts each request's round-robin at a
        // random address of the DNS answer, so shares vary by about +-10.
        assert!(
            *count >= 50,
            "{replica} served only {count} of 300: {served:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_under_a_stream_of_gets_fails_no_get_and_rejoins_when_restarted() {
    let mut gateway = Gateway::start(3).await;
    let api = Api::new(&gateway.nginx.base_url());
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (api, stop, sent, failed) =
                (api.clone(), stop.clone(), sent.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let response = api
                        .raw(reqwest::Method::GET, "/api/v1/products?limit=5")
                        .send()
                        .await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !response.is_ok_and(|r| r.status() == StatusCode::OK) {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    wait::until("GETs to flow", Duration::from_secs(10), || async {
        (sent.load(Ordering::Relaxed) > 100).then_some(())
    })
    .await;

    // Act: SIGKILL one replica (it stays in DNS, like a crashed container), keep
    // reading, then start it again on the same address.
    gateway.replicas[1].kill();
    let killed_at = sent.load(Ordering::Relaxed);
    wait::until(
        "300 GETs with a replica dead",
        Duration::from_secs(20),
        || async { (sent.load(Ordering::Relaxed) > killed_at + 300).then_some(()) },
    )
    .await;
    let before = gateway
        .nginx
        .requests_by_upstream()
        .get(&gateway.upstream(1))
        .copied()
        .unwrap_or(0);
    let restarted = Instant::now();
    gateway.replicas[1].restart().await;
    let upstream = gateway.upstream(1);
    wait::until(
        "the restarted replica to serve again",
        Duration::from_secs(20),
        || async {
            let now = gateway
                .nginx
                .requests_by_upstream()
                .get(&upstream)
                .copied()
                .unwrap_or(0);
            (now > before).then_some(())
        },
    )
    .await;
    let rejoined = restarted.elapsed();
    stop.store(true, Ordering::Relaxed);
    join_all(readers).await;

    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "replica SIGKILLed under GETs: {failed} failed of {sent}; restarted replica served again {:.2} s after its restart began",
        rejoined.as_secs_f64()
    );
    assert_eq!(failed, 0, "nginx must retry GETs on a live replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_added_to_dns_receives_traffic_without_restarting_nginx() {
    let mut gateway = Gateway::start(2).await;
    let api = Api::new(&gateway.nginx.base_url());
    assert_eq!(api.list_products("").await.status(), StatusCode::OK);

    // Act: scale up, as `docker compose up --scale api=3` does.
    let added = gateway.add_replica().await;
    let published = Instant::now();
    let upstream = gateway.upstream(added);
    wait::until(
        "nginx to send requests to the new replica",
        Duration::from_secs(20),
        || async {
            api.list_products("?limit=1").await;
            gateway
                .nginx
                .requests_by_upstream()
                .contains_key(&upstream)
                .then_some(())
        },
    )
    .await;

    let took = published.elapsed();
    println!(
        "a scaled-up replica received traffic {:.2} s after it was published in DNS",
        took.as_secs_f64()
    );
    // resolver valid=5s in the template, plus the test's DNS TTL of 1 s.
    assert!(took <= Duration::from_secs(8), "took {took:?}");
}

#[tokio::test]
async fn the_gateway_hides_metrics_and_versions_passes_request_ids_and_brakes_sign_ins() {
    let gateway = Gateway::start(1).await;
    let api = Api::new(&gateway.nginx.base_url());

    let metrics = api
        .raw(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .expect("answer");
    expect_problem(metrics, StatusCode::NOT_FOUND, "not_found").await;

    let response = api
        .raw(reqwest::Method::GET, "/api/v1/products")
        .header("X-Request-Id", "trace-me-42")
        .send()
        .await
        .expect("answer");
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    assert_eq!(
        response.headers()["server"],
        "nginx",
        "no version in Server"
    );
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let generated = api.list_products("").await;
    let id = generated.headers()["x-request-id"].to_str().expect("text");
    assert_eq!(
        id.len(),
        32,
        "nginx's $request_id when the client sends none: {id}"
    );

    // 40 sign-ins at once from one address: the burst passes, the rest get 429.
    let attempts =
        join_all((0..40).map(|_| api.login("nobody@example.com", "wrong-password"))).await;
    let limited: Vec<_> = attempts
        .into_iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    println!("sign-in attempts limited by nginx: {} of 40", limited.len());
    assert!(limited.len() >= 20, "{} limited", limited.len());
    let first = limited.into_iter().next().expect("one limited");
    assert!(first.headers().contains_key("retry-after"));
    expect_problem(first, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;

    // The container healthcheck of a replica.
    assert!(
        gateway.replicas[0].healthcheck(),
        "api healthcheck must pass on a ready replica"
    );
}
