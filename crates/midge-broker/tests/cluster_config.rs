//! `[cluster]`: parsing, defaults and the errors of keys that cannot work.

use midge_broker::config::{BrokerConfig, ClusterConfig, Secret};

fn parse(text: &str) -> Result<BrokerConfig, String> {
    let config: BrokerConfig = toml::from_str(text).map_err(|e| e.to_string())?;
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

#[test]
fn without_cluster_the_broker_is_standalone() {
    assert!(parse("").unwrap().cluster.is_none());
}

#[test]
fn one_url_or_several_and_the_defaults() {
    let config = parse("[cluster]\nnats = \"nats://127.0.0.1:4222\"\nnode_id = \"a\"\n").unwrap();
    let cluster = config.cluster.unwrap();
    assert_eq!(cluster.nats, ["nats://127.0.0.1:4222"]);
    assert_eq!(cluster.node_id, "a");
    assert_eq!(cluster.subject_prefix, "midge");
    assert_eq!((cluster.stream_replicas, cluster.kv_replicas), (1, 1));
    assert_eq!(cluster.connect_timeout_ms, 5000);

    let config = parse(
        "[cluster]\nnats = [\"nats://a:4222\", \"tls://b:4223\", \"c:4224\", \"nats://[::1]:4222\"]\n\
         node_id = \"node-2\"\nuser = \"u\"\npassword = \"p\"\nca_file = \"ca.pem\"\n\
         kv_replicas = 3\nstream_replicas = 3\nsubject_prefix = \"mq_1\"\n",
    )
    .unwrap();
    let cluster = config.cluster.unwrap();
    assert_eq!(cluster.nats.len(), 4);
    assert_eq!(cluster.password.unwrap().expose(), "p");
    assert_eq!(cluster.kv_replicas, 3);
}

#[test]
fn the_password_is_never_printed() {
    let config = parse(
        "[cluster]\nnats = \"nats://a:4222\"\nnode_id = \"a\"\nuser = \"u\"\npassword = \"hunter2\"\n",
    )
    .unwrap();
    assert!(!format!("{config:?}").contains("hunter2"));
    let config =
        parse("[cluster]\nnats = \"nats://a:4222\"\nnode_id = \"a\"\ntoken = \"t0k3n\"\n").unwrap();
    assert!(!format!("{config:?}").contains("t0k3n"));
}

#[test]
fn relative_files_are_relative_to_the_config_file() {
    let mut config = parse(
        "[cluster]\nnats = \"nats://a:4222\"\nnode_id = \"a\"\ncreds_file = \"n.creds\"\nca_file = \"/abs/ca.pem\"\n",
    )
    .unwrap();
    config.resolve_paths(std::path::Path::new("/etc/midge"));
    let cluster = config.cluster.unwrap();
    assert_eq!(
        cluster.creds_file.unwrap(),
        std::path::Path::new("/etc/midge/n.creds")
    );
    assert_eq!(
        cluster.ca_file.unwrap(),
        std::path::Path::new("/abs/ca.pem")
    );
}

#[test]
fn keys_that_cannot_work_are_refused_with_the_key_named() {
    let cases = [
        (
            "nats = []\nnode_id = \"a\"",
            "nats needs at least one server URL",
        ),
        (
            "nats = \"http://a:80\"\nnode_id = \"a\"",
            "the scheme must be nats",
        ),
        (
            "nats = \"nats://a:x\"\nnode_id = \"a\"",
            "the port must be a number",
        ),
        ("nats = \"nats://:4222\"\nnode_id = \"a\"", "no host"),
        (
            "nats = \"a:4222\"\nnode_id = \"\"",
            "node_id must not be empty",
        ),
        (
            "nats = \"a:4222\"\nnode_id = \"a.b\"",
            "node_id \"a.b\" may hold only",
        ),
        (
            "nats = \"a:4222\"\nnode_id = \"a\"\nsubject_prefix = \"m>\"",
            "subject_prefix",
        ),
        (
            "nats = \"a:4222\"\nnode_id = \"a\"\nuser = \"u\"",
            "user needs a password",
        ),
        (
            "nats = \"a:4222\"\nnode_id = \"a\"\npassword = \"p\"",
            "password needs a user",
        ),
        (
            "nats = \"a:4222\"\nnode_id = \"a\"\nuser = \"u\"\npassword = \"p\"\ntoken = \"t\"",
            "one way to authenticate",
        ),
        (
            "nats = \"a:4222\"\nnode_id = \"a\"\nkv_replicas = 0",
            "kv_replicas must be from 1 to 5, not 0",
        ),
        (
            "nats = \"a:4222\"\nnode_id = \"a\"\nstream_replicas = 6",
            "stream_replicas must be from 1 to 5",
        ),
        (
            "nats = \"a:4222\"\nnode_id = \"a\"\nconnect_timeout_ms = 0",
            "connect_timeout_ms",
        ),
    ];
    for (keys, expected) in cases {
        let text = format!("[cluster]\n{keys}\n");
        let error = parse(&text).expect_err(&text);
        assert!(error.starts_with("cluster: "), "{text}: {error}");
        assert!(error.contains(expected), "{text}: {error}");
    }
    // Missing and unknown keys are refused when the file is read.
    for (text, expected) in [
        ("[cluster]\nnode_id = \"a\"\n", "missing field `nats`"),
        ("[cluster]\nnats = \"a:4222\"\n", "missing field `node_id`"),
        (
            "[cluster]\nnats = \"a:4222\"\nnode_id = \"a\"\nreplicas = 3\n",
            "unknown field `replicas`",
        ),
    ] {
        let error = parse(text).expect_err(text);
        assert!(error.contains(expected), "{text}: {error}");
    }
}

/// A reload cannot join, leave or change a cluster: every change of `[cluster]` (its secrets
/// included) is reported as needing a restart.
#[tokio::test]
async fn a_reload_reports_cluster_changes_as_needing_a_restart() {
    let mut config = BrokerConfig::default();
    config.sys.interval_secs = 0;
    config.listeners[0].bind =
        midge_broker::BindAddr::Tcp("127.0.0.1:0".parse().expect("an address"));
    let mut cluster = ClusterConfig::new(vec!["nats://127.0.0.1:4222".into()], "a");
    cluster.token = Some(Secret::new("one"));
    config.cluster = Some(cluster.clone());
    // The builder takes the section as it is; joining NATS is the cluster crate's part.
    let broker = midge_broker::Broker::builder()
        .config(config.clone())
        .start()
        .await
        .expect("starts");
    let reload = broker.reload_config(&config).expect("valid");
    assert!(
        reload.needs_restart.is_empty(),
        "{:?}",
        reload.needs_restart
    );
    let changed = |change: &dyn Fn(&mut ClusterConfig)| {
        let mut new = config.clone();
        if let Some(cluster) = &mut new.cluster {
            change(cluster);
        }
        broker.reload_config(&new).expect("valid").needs_restart
    };
    assert_eq!(
        changed(&|c| c.token = Some(Secret::new("two"))),
        ["cluster"]
    );
    assert_eq!(changed(&|c| c.node_id = "b".into()), ["cluster"]);
    assert_eq!(changed(&|c| c.kv_replicas = 3), ["cluster"]);
    let mut without = config.clone();
    without.cluster = None;
    assert_eq!(
        broker.reload_config(&without).expect("valid").needs_restart,
        ["cluster"]
    );
    broker.shutdown().await;
}
