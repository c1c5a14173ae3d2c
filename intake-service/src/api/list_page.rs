//! A ListTasks page as the wire carries it: the view a request asks for, and the
//! page cut to the response bound. The store already read no more than about the
//! bound (by stored sizes); here the encoded sizes decide, exactly.

use jct::prost::Message;
use jct::v1 as pb;
use tonic::Status;
use uuid::Uuid;

use crate::store::{ListPage, ListView};
use crate::task::Task;

use super::errors::validation_failed;

/// The default bound of a ListTasks response, in bytes.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 512 * 1024;
/// Never more than gRPC clients accept by default (4 MiB), whatever is configured.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Room kept for `next_page_token` (and its field header) in the response.
const TOKEN_RESERVE_BYTES: usize = 128;

/// The view a request names; an unknown number is refused, not guessed at.
pub fn view_of(view: i32) -> Result<ListView, Status> {
    match pb::TaskView::try_from(view) {
        Ok(pb::TaskView::Unspecified | pb::TaskView::Full) => Ok(ListView::Full),
        Ok(pb::TaskView::Basic) => Ok(ListView::Basic),
        Err(_) => Err(validation_failed([(
            "view",
            "must be TASK_VIEW_UNSPECIFIED, TASK_VIEW_BASIC or TASK_VIEW_FULL",
        )])),
    }
}

/// The tasks of a page as shown, and where the next page starts (if any).
pub struct ShownPage {
    pub tasks: Vec<pb::Task>,
    /// The last task returned, when more tasks follow it.
    pub continue_after: Option<Uuid>,
}

/// Shows the page's tasks in order until the next would take the response past
/// `max_bytes`; the first is shown whatever its size (GetTask would return it
/// too), so paging always moves on.
pub fn fit(
    page: ListPage,
    view: ListView,
    max_bytes: usize,
    show: impl Fn(&Task) -> pb::Task,
) -> ShownPage {
    let budget = max_bytes
        .min(MAX_RESPONSE_BYTES)
        .saturating_sub(TOKEN_RESERVE_BYTES);
    let available = page.tasks.len();
    let mut used = 0usize;
    let mut tasks = Vec::with_capacity(available);
    let mut last = None;
    for task in &page.tasks {
        let mut shown = show(task);
        if view == ListView::Basic {
            shown.inputs = None;
            shown.metadata = None;
            shown.result = None;
        }
        // `repeated Task tasks = 1`: a one-byte key, the length, the message
        let len = shown.encoded_len();
        let field = 1 + jct::prost::encoding::encoded_len_varint(len as u64) + len;
        if !tasks.is_empty() && used + field > budget {
            break;
        }
        used += field;
        tasks.push(shown);
        last = Some(task.id);
    }
    let more = page.more || tasks.len() < available;
    ShownPage {
        tasks,
        continue_after: if more { last } else { None },
    }
}
