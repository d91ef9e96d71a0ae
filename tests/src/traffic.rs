//! Traffic that runs through a fault: buyers that retry a failed purchase
//! with the same `Idempotency-Key` (as a careful client does) and read their
//! purchase right after its 201, catalog readers, and readers of their own
//! purchase lists. Everything is recorded on one clock, so the failure tests
//! and the Docker check can cut the run into faults and report each.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::client::{Api, Session};
use evergreen_loadgen::timeline::longest_gap_without_success;

/// Pause between two attempts of one purchase (a client's back-off).
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Pause between two reads of one reader.
const READ_PAUSE: Duration = Duration::from_millis(20);

/// One attempt of a purchase.
#[derive(Debug, Clone)]
pub struct Write {
    /// The Idempotency-Key: retries of one purchase share it.
    pub key: String,
    pub started: Duration,
    pub took: Duration,
    pub status: Option<StatusCode>,
    pub purchase_id: Option<Uuid>,
}

impl Write {
    pub fn finished(&self) -> Duration {
        self.started + self.took
    }
    pub fn succeeded(&self) -> bool {
        self.status == Some(StatusCode::CREATED)
    }
}

/// What a read asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReadKind {
    /// `GET /products/{id}`, anonymous.
    Catalog,
    /// `GET /purchases/{id}` by the buyer, right after its 201.
    OwnPurchase,
    /// `GET /purchases?limit=5` by a buyer.
    OwnPurchases,
}

#[derive(Debug, Clone)]
pub struct Read {
    pub kind: ReadKind,
    pub started: Duration,
    pub took: Duration,
    pub status: Option<StatusCode>,
}

impl Read {
    pub fn ok(&self) -> bool {
        self.status == Some(StatusCode::OK)
    }
}

/// Buyers and readers running until [`Traffic::finish`].
#[derive(Debug)]
pub struct Traffic {
    origin: Instant,
    stop: Arc<AtomicBool>,
    writes: Arc<Mutex<Vec<Write>>>,
    reads: Arc<Mutex<Vec<Read>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// One buyer task per session (buying `product_id` one at a time) and
    /// `readers` catalog readers plus `readers` purchase-list readers, spread
    /// over `apis`. Times are measured from `origin`.
    pub fn start(
        apis: &[Api],
        buyers: &[Session],
        product_id: &str,
        readers: usize,
        origin: Instant,
    ) -> Self {
        let mut traffic = Self {
            origin,
            stop: Arc::new(AtomicBool::new(false)),
            writes: Arc::default(),
            reads: Arc::default(),
            tasks: Vec::new(),
        };
        for (i, buyer) in buyers.iter().enumerate() {
            let api = apis[i % apis.len()].clone();
            let task = traffic.buyer(api, buyer.clone(), product_id.to_owned());
            traffic.tasks.push(task);
        }
        for i in 0..readers {
            let api = apis[i % apis.len()].clone();
            let path = format!("/api/v1/products/{product_id}");
            let task = traffic.reader(api, ReadKind::Catalog, path, None);
            traffic.tasks.push(task);
            let buyer = &buyers[i % buyers.len()];
            let task = traffic.reader(
                apis[(i + 1) % apis.len()].clone(),
                ReadKind::OwnPurchases,
                "/api/v1/purchases?limit=5".to_owned(),
                Some(buyer.access_token.clone()),
            );
            traffic.tasks.push(task);
        }
        traffic
    }

    fn buyer(&self, api: Api, buyer: Session, product_id: String) -> JoinHandle<()> {
        let (stop, writes, reads, origin) = (
            self.stop.clone(),
            self.writes.clone(),
            self.reads.clone(),
            self.origin,
        );
        let body = json!({"items": [{"product_id": product_id, "quantity": 1}]});
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let key = Uuid::new_v4().to_string();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let response = api
                        .raw(Method::POST, "/api/v1/purchases")
                        .bearer_auth(&buyer.access_token)
                        .header("Idempotency-Key", &key)
                        .json(&body)
                        .send()
                        .await;
                    let took = started.elapsed();
                    let (status, purchase_id) = match response {
                        Ok(response) => {
                            let status = response.status();
                            let body = response.json::<Value>().await.unwrap_or_default();
                            (
                                Some(status),
                                body["id"].as_str().and_then(|id| id.parse::<Uuid>().ok()),
                            )
                        }
                        Err(_) => (None, None),
                    };
                    writes.lock().expect("lock").push(Write {
                        key: key.clone(),
                        started: started - origin,
                        took,
                        status,
                        purchase_id,
                    });
                    if status == Some(StatusCode::CREATED) {
                        assert!(purchase_id.is_some(), "a 201 without a purchase id");
                        // A client always sees its own purchase right after its 201.
                        if let Some(id) = purchase_id {
                            let read = timed_get(
                                &api,
                                &format!("/api/v1/purchases/{id}"),
                                Some(&buyer.access_token),
                            )
                            .await;
                            reads.lock().expect("lock").push(Read {
                                kind: ReadKind::OwnPurchase,
                                started: read.0 - origin,
                                took: read.1,
                                status: read.2,
                            });
                        }
                        break;
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        })
    }

    fn reader(
        &self,
        api: Api,
        kind: ReadKind,
        path: String,
        token: Option<String>,
    ) -> JoinHandle<()> {
        let (stop, reads, origin) = (self.stop.clone(), self.reads.clone(), self.origin);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (started, took, status) = timed_get(&api, &path, token.as_deref()).await;
                reads.lock().expect("lock").push(Read {
                    kind,
                    started: started - origin,
                    took,
                    status,
                });
                tokio::time::sleep(READ_PAUSE).await;
            }
        })
    }

    /// Time since `origin`, on the clock of every record.
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Whether a purchase that started after `instant` succeeded.
    pub fn succeeded_after(&self, instant: Duration) -> bool {
        self.writes
            .lock()
            .expect("lock")
            .iter()
            .any(|w| w.started >= instant && w.succeeded())
    }

    /// Successful purchases that started after `instant`.
    pub fn successes_after(&self, instant: Duration) -> usize {
        self.writes
            .lock()
            .expect("lock")
            .iter()
            .filter(|w| w.started >= instant && w.succeeded())
            .count()
    }

    /// Everything recorded so far; the traffic goes on.
    pub fn snapshot(&self) -> Report {
        Report {
            writes: self.writes.lock().expect("lock").clone(),
            reads: self.reads.lock().expect("lock").clone(),
        }
    }

    /// Stops every task and returns everything recorded.
    pub async fn finish(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        join_all(self.tasks).await;
        let writes = self.writes.lock().expect("lock").clone();
        let reads = self.reads.lock().expect("lock").clone();
        Report { writes, reads }
    }
}

async fn timed_get(
    api: &Api,
    path: &str,
    token: Option<&str>,
) -> (Instant, Duration, Option<StatusCode>) {
    let started = Instant::now();
    let mut request = api.raw(Method::GET, path);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let status = request.send().await.ok().map(|r| r.status());
    (started, started.elapsed(), status)
}

/// What a traffic run saw.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub writes: Vec<Write>,
    pub reads: Vec<Read>,
}

impl Report {
    /// Ids of the purchases answered with 201.
    pub fn acknowledged(&self) -> Vec<Uuid> {
        self.writes
            .iter()
            .filter(|w| w.succeeded())
            .filter_map(|w| w.purchase_id)
            .collect()
    }

    /// Idempotency keys that no attempt got a 201 for (the last attempt of a
    /// buyer when traffic stopped may or may not have landed).
    pub fn unacknowledged_keys(&self) -> usize {
        let acknowledged: HashSet<&str> = self
            .writes
            .iter()
            .filter(|w| w.succeeded())
            .map(|w| w.key.as_str())
            .collect();
        let all: HashSet<&str> = self.writes.iter().map(|w| w.key.as_str()).collect();
        all.len() - acknowledged.len()
    }

    /// The write-unavailability window after `fault`: the longest stretch
    /// without a successful purchase, from the fault to the first success,
    /// between two, or from the last one to the end of the traffic (the
    /// last attempt's answer). The same definition loadgen reports
    /// ([`longest_gap_without_success`]).
    pub fn write_gap(&self, fault: Duration) -> Duration {
        let end = self
            .writes
            .iter()
            .map(Write::finished)
            .max()
            .unwrap_or(fault);
        self.write_gap_within(fault, end)
    }

    /// The same, counting only what happened before `until`, which also
    /// ends the last stretch.
    pub fn write_gap_within(&self, fault: Duration, until: Duration) -> Duration {
        let successes: Vec<f64> = self
            .writes
            .iter()
            .filter(|w| w.succeeded() && w.finished() <= until)
            .map(|w| w.finished().as_secs_f64())
            .collect();
        Duration::from_secs_f64(longest_gap_without_success(
            &successes,
            fault.as_secs_f64(),
            until.as_secs_f64(),
        ))
    }

    /// Failed purchase attempts by status (`None`: no answer at all).
    pub fn failures_by_status(&self) -> BTreeMap<Option<u16>, usize> {
        let mut counts = BTreeMap::new();
        for write in self.writes.iter().filter(|w| !w.succeeded()) {
            *counts.entry(write.status.map(|s| s.as_u16())).or_default() += 1;
        }
        counts
    }

    /// Statuses other than the documented answers of a purchase under a
    /// fault: 201, 503 (not confirmed, retry) and 409 (the same key still in
    /// flight).
    pub fn unexpected_write_statuses(&self) -> Vec<Option<StatusCode>> {
        self.writes
            .iter()
            .map(|w| w.status)
            .filter(|s| {
                !matches!(
                    *s,
                    Some(
                        StatusCode::CREATED
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::CONFLICT
                    )
                )
            })
            .collect()
    }

    /// Reads that started within `[from, to)`.
    pub fn reads_between(&self, from: Duration, to: Duration) -> Vec<&Read> {
        self.reads
            .iter()
            .filter(|r| r.started >= from && r.started < to)
            .collect()
    }

    /// Reads that did not answer 200, printed for the log.
    pub fn failed_reads(&self) -> Vec<&Read> {
        let failed: Vec<&Read> = self.reads.iter().filter(|r| !r.ok()).collect();
        for read in &failed {
            eprintln!(
                "failed {:?} read at {:?} after {:?}: {:?}",
                read.kind, read.started, read.took, read.status
            );
        }
        failed
    }

    /// Reads by kind: (answered 200, all).
    pub fn reads_by_kind(&self) -> BTreeMap<ReadKind, (usize, usize)> {
        let mut counts: BTreeMap<ReadKind, (usize, usize)> = BTreeMap::new();
        for read in &self.reads {
            let entry = counts.entry(read.kind).or_default();
            entry.0 += usize::from(read.ok());
            entry.1 += 1;
        }
        counts
    }

    pub fn slowest(&self) -> Duration {
        self.writes
            .iter()
            .map(|w| w.took)
            .chain(self.reads.iter().map(|r| r.took))
            .max()
            .unwrap_or_default()
    }
}
