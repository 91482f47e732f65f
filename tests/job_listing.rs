//! `drover jobs list --newest` (`order=newest`): live states and the list
//! with no state page from the newest job down, the cursor going on where
//! the page ended; a bad order is refused.

mod common;

use common::*;
use drover::api::types::JobsPageBody;

fn page(server: &str, args: &[&str]) -> JobsPageBody {
    let mut all = vec!["jobs", "list", "--json"];
    all.extend_from_slice(args);
    drover_body(&all, server)
}

#[tokio::test]
async fn newest_first_pages_down_from_the_newest_job() {
    let node = TestNode::start("");
    let server = node.grpc.as_str();
    let ids = enqueue_n(server, "listed", 5);
    let ids_of = |p: &JobsPageBody| p.jobs.iter().map(|j| j.id).collect::<Vec<u64>>();
    for state in [&["--state", "ready"][..], &[][..]] {
        let mut args = state.to_vec();
        args.extend_from_slice(&["--newest", "--limit", "2"]);
        let first = page(server, &args);
        assert_eq!(ids_of(&first), vec![ids[4], ids[3]], "{state:?}");
        let next = first.next.clone().expect("a next page");
        let mut more = args.clone();
        more.extend_from_slice(&["--after", &next]);
        let second = page(server, &more);
        assert_eq!(ids_of(&second), vec![ids[2], ids[1]], "{state:?}");
    }
    // The default stays oldest first.
    let oldest = page(server, &["--state", "ready", "--limit", "2"]);
    assert_eq!(ids_of(&oldest), vec![ids[0], ids[1]]);
    let (status, err) = get_error(&format!("{}/api/v1/jobs?order=sideways", node.http)).await;
    assert_eq!(status, 400);
    assert!(err.error.message.contains("order"), "{err:?}");
}
