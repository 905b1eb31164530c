//! `tcp://` hosts speak mutual TLS, and a certificate that does not belong is refused — by
//! either side — with a message that says so.
//!
//! One test-bed host (its own CA, server and client certificates) and a foreign CA with a
//! client certificate of its own:
//! - berth's client certificate from the foreign CA: the engine refuses it (its log says so);
//! - the foreign CA configured in berth: berth refuses the engine's certificate;
//! - `tcp://` with neither `tls` nor `insecure: true`: refused before any connection.
//!
//! Standalone, each failure exits 1 naming the host and saying certificate/CA; the operator
//! sets the DockerHost `Ready=False`, reason `TLSError`, with the same words.

use std::time::Duration;

use berth_crd::DockerHost;
use berth_tests::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

/// `ca.crt`, `tls.crt`, `tls.key` as a Secret.
fn tls_secret(ns: &str, name: &str, ca: &str, cert: &str, key: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": ns},
        "stringData": {"ca.crt": ca, "tls.crt": cert, "tls.key": key}
    })
}

fn tcp_host(ns: &str, name: &str, endpoint: &str, secret: Option<&str>) -> Value {
    let mut spec = json!({"endpoint": endpoint});
    if let Some(s) = secret {
        spec["tls"] = json!({"secretName": s});
    }
    json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
        "metadata": {"name": name, "namespace": ns, "labels": {"role": "web"}}, "spec": spec
    })
}

/// The three TLS Secrets: the host's own, a client certificate from a foreign CA, and the
/// foreign CA as the one berth trusts.
fn secrets(ns: &str, host: &RemoteHost, foreign: &ForeignPki) -> [Value; 3] {
    [
        tls_secret(ns, "good", &host.ca_pem(), &host.cert_pem(), &host.key_pem()),
        tls_secret(ns, "foreign-client", &host.ca_pem(), &foreign.cert_pem, &foreign.key_pem),
        tls_secret(ns, "wrong-ca", &foreign.ca_pem, &host.cert_pem(), &host.key_pem()),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn standalone_refuses_certificates_that_do_not_belong() {
    let host = RemoteHost::start(31);
    let ns = unique_ns("mtls");
    let dir = tempfile::tempdir().unwrap();
    let foreign = ForeignPki::generate(&dir.path().join("foreign"));
    let set: Value = serde_saphyr::from_str(&EchoSet::new(&ns, "web").yaml()).unwrap();
    let [good, foreign_client, wrong_ca] = secrets(&ns, &host, &foreign);
    let plan = |file: &str, docs: &[Value]| {
        let path = write_documents(dir.path(), file, docs);
        async move { berth_async(["plan", "-f", &path], &[]).await }
    };

    // The host's own certificates work: a plan (changes pending) over TLS.
    let out = plan("good.yaml", &[good, tcp_host(&ns, "remote", host.tcp_endpoint(), Some("good")), set.clone()]).await;
    out.assert_code(2);

    // A client certificate the engine's CA did not sign: the engine refuses it.
    let log_before = host.engine_log().len();
    let out = plan(
        "foreign-client.yaml",
        &[foreign_client, tcp_host(&ns, "remote", host.tcp_endpoint(), Some("foreign-client")), set.clone()],
    )
    .await;
    out.assert_code(1);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains("remote") && said.contains(host.tcp_endpoint()), "names the host: {out}");
    assert!(said.contains("TLS") && said.contains("certificate"), "says certificate: {out}");
    let engine_said = host.engine_log()[log_before..].to_string();
    assert!(engine_said.contains("TLS handshake error"), "the engine refused the handshake:\n{engine_said}");

    // The engine's certificate is not signed by the CA berth was given: berth refuses it.
    let out =
        plan("wrong-ca.yaml", &[wrong_ca, tcp_host(&ns, "remote", host.tcp_endpoint(), Some("wrong-ca")), set.clone()])
            .await;
    out.assert_code(1);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains("remote") && said.contains(host.tcp_endpoint()), "names the host: {out}");
    assert!(said.contains("certificate") && said.contains("CA"), "says certificate / CA: {out}");

    // Plain TCP without `insecure: true`: refused before any connection, naming the field.
    let out = plan("plain.yaml", &[tcp_host(&ns, "remote", host.tcp_endpoint(), None), set]).await;
    out.assert_code(1);
    assert!(out.stderr.contains("DockerHost") && out.stderr.contains("spec.tls"), "names the field: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_reports_tls_errors_on_the_docker_host() {
    let host = RemoteHost::start(32);
    let ns = unique_ns("mtls");
    let dir = tempfile::tempdir().unwrap();
    let foreign = ForeignPki::generate(&dir.path().join("foreign"));
    let (fake, client) = fake_cluster(&ns).await;
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for s in secrets(&ns, &host, &foreign) {
        secret_api.create(&PostParams::default(), &serde_json::from_value(s).unwrap()).await.unwrap();
    }
    let hosts: Api<DockerHost> = Api::namespaced(client.clone(), &ns);
    for (name, secret) in [("good", "good"), ("foreign-client", "foreign-client"), ("wrong-ca", "wrong-ca")] {
        let h = serde_json::from_value(tcp_host(&ns, name, host.tcp_endpoint(), Some(secret))).unwrap();
        hosts.create(&PostParams::default(), &h).await.unwrap();
    }
    let op = spawn_operator(&fake, dir.path(), &ns, "mtls", free_port());

    let ready = |name: &'static str| {
        let hosts = hosts.clone();
        async move {
            eventually(&format!("DockerHost {name} has a Ready condition"), Duration::from_secs(60), || async {
                hosts.get(name).await.ok()?.status?.conditions.into_iter().find(|c| c.type_ == "Ready")
            })
            .await
        }
    };
    let good = ready("good").await;
    assert_eq!((good.status.as_str(), good.reason.as_str()), ("True", "Reachable"), "{good:?}");
    for name in ["foreign-client", "wrong-ca"] {
        let c = ready(name).await;
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "TLSError"), "{name}: {c:?}\n{}", op.stderr());
        assert!(
            c.message.contains(host.tcp_endpoint()) && c.message.contains("certificate"),
            "{name}: the message names the endpoint and the certificate: {}",
            c.message
        );
    }
}
