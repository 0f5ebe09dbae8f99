//! A broker outage gives 503s within the send timeout and "not ready", never a hang; when the
//! broker is back the daemon recovers by itself. (The same check on tansu is in cluster.rs.)

use streamgate::config::Brokers;
use streamgate::kafka::EmbeddedBroker;
use streamgate_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_gives_503_then_recovers() {
    let mut config = test_config();
    let broker = EmbeddedBroker::start(&config.topics).unwrap();
    config.brokers = Brokers::Bootstrap(broker.bootstrap_servers().to_string());
    config.limits.ingest.send_timeout_ms = 2000;
    let d = Daemon::start(config).await;
    check_outage(&d, || broker.broker_down(), || broker.broker_up()).await;
    d.stop().await.unwrap();
}
