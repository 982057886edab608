//! Runs OTTL over a batch, one context at a time, on the encoded bytes: each item is
//! read where it lies, dropped items are cut out, and only edited items are rewritten.

use std::borrow::Cow;

use sidekick_collector::payload::wire::Edit;
use sidekick_collector::payload::{Batch, Signal};

use super::item::{Context, DataKind, Item};
use super::wire::{self, Reader};

/// What becomes of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Drop,
}

/// Where a context's messages are in the batch: the schema depth the walk visits.
fn depth(context: Context) -> usize {
    match context {
        Context::Resource => 0,
        Context::Scope => 1,
        Context::Span | Context::SpanEvent | Context::Log | Context::Metric => 2,
        Context::DataPoint => 4,
    }
}

fn field1(msg: &[u8]) -> &[u8] {
    wire::last(msg, 1).map(|f| f.bytes()).unwrap_or(&[])
}

/// What was read from the message last asked about, read again only for another one:
/// a resource's and a scope's field 1 (finding it reads past every item they hold) and
/// a data message's kind (reading it passes every point) are read once per message
/// rather than once per item. Keyed by the message's place, since the walk hands out
/// its slices afresh on each visit.
#[derive(Default)]
struct PerMessage<T> {
    of: (usize, usize),
    value: T,
}

impl<T: Clone> PerMessage<T> {
    fn get(&mut self, msg: &[u8], read: impl FnOnce(&[u8]) -> T) -> T {
        let key = (msg.as_ptr() as usize, msg.len());
        if self.of != key {
            self.of = key;
            self.value = read(msg);
        }
        self.value.clone()
    }
}

/// Where field 1 of `msg` lies in it (empty when absent).
fn field1_range(msg: &[u8]) -> std::ops::Range<usize> {
    let found = field1(msg);
    if found.is_empty() {
        return 0..0;
    }
    let start = found.as_ptr() as usize - msg.as_ptr() as usize;
    start..start + found.len()
}

/// Field 1 of an ancestor, through its memo.
fn ancestor_field1<'b>(
    memo: &mut PerMessage<std::ops::Range<usize>>,
    ancestor: Option<&(u32, &'b [u8])>,
) -> &'b [u8] {
    match ancestor {
        Some(&(_, msg)) => &msg[memo.get(msg, field1_range)],
        None => &[],
    }
}

/// Runs `f` on every item of `context` in the batch, in order. `f` may edit the item
/// (its `msg`) and says whether to keep it. Span events dropped leave their span;
/// scopes, resources and metrics left empty are removed.
pub fn for_each<S: Signal>(
    batch: &mut Batch<S>,
    context: Context,
    f: &mut dyn FnMut(&mut Item<'_>) -> Verdict,
) {
    let (mut resource_of, mut scope_of) = (PerMessage::default(), PerMessage::default());
    let mut data_kind = PerMessage::<DataKind>::default();
    batch.edit_encoded(depth(context), &mut |ancestors, _number, msg| {
        let resource = ancestor_field1(&mut resource_of, ancestors.first());
        let scope = ancestor_field1(&mut scope_of, ancestors.get(1));
        match context {
            // The resource and scope are field 1 of the messages visited.
            Context::Resource | Context::Scope => {
                let mut item = Item::new(context, field1(msg));
                if context == Context::Scope {
                    item.resource = resource;
                }
                match f(&mut item) {
                    Verdict::Drop => Edit::Drop,
                    Verdict::Keep => match item.msg {
                        Cow::Borrowed(_) => Edit::Keep,
                        Cow::Owned(new) => {
                            let mut field = Vec::with_capacity(new.len() + 6);
                            wire::put_bytes(&mut field, 1, &new);
                            Edit::Replace(wire::replace_field_first(msg, 1, &field))
                        }
                    },
                }
            }
            Context::SpanEvent => events(msg, resource, scope, f),
            _ => {
                let mut item = Item::new(context, msg);
                item.resource = resource;
                item.scope = scope;
                if let Some(&(data, data_msg)) = ancestors.get(3) {
                    item.parent = ancestors[2].1;
                    item.data = data;
                    item.data_kind = data_kind.get(data_msg, DataKind::of);
                }
                match f(&mut item) {
                    Verdict::Drop => Edit::Drop,
                    Verdict::Keep => match item.msg {
                        Cow::Borrowed(_) => Edit::Keep,
                        Cow::Owned(new) => Edit::Replace(new),
                    },
                }
            }
        }
    });
}

/// The events (field 11) of one span.
fn events(
    span: &[u8],
    resource: &[u8],
    scope: &[u8],
    f: &mut dyn FnMut(&mut Item<'_>) -> Verdict,
) -> Edit {
    let mut changed = false;
    let mut kept: Vec<Cow<'_, [u8]>> = Vec::new();
    for field in Reader::new(span).filter(|f| f.number == 11) {
        let mut item = Item::new(Context::SpanEvent, field.bytes());
        item.resource = resource;
        item.scope = scope;
        item.parent = span;
        match f(&mut item) {
            Verdict::Drop => changed = true,
            Verdict::Keep => {
                changed |= matches!(item.msg, Cow::Owned(_));
                kept.push(item.msg);
            }
        }
    }
    if !changed {
        return Edit::Keep;
    }
    let mut out = Vec::with_capacity(span.len());
    for field in Reader::new(span).filter(|f| f.number != 11) {
        out.extend_from_slice(field.raw);
    }
    for event in &kept {
        wire::put_bytes(&mut out, 11, event);
    }
    Edit::Replace(out)
}
