"""View changes of the PBFT engine: leaving a view, installing the next, and finding the
view the others are in after a crash, a restart or a partition.

This is a mixin of ``pbft.Engine`` (it reads and writes the engine's state); ``decide`` is
the deterministic rule every replica applies to the same VIEW-CHANGEs.

Which view to be in is taken from what the others say of theirs: each peer's latest
VIEW-CHANGE (it wants that view) and status (its view, and whether it works in it), kept
per peer, the highest claim only, so memory stays bounded whatever a peer sends. One
Byzantine replica can claim any view; f+1 replicas agreeing on at least a view include an
honest one that is really there, so a replica only ever follows the (f+1)-th highest
claim:

* f+1 peers *working* in view w at or above ours: adopt w (we missed its NEW-VIEW).
* f+1 peers past our view: change to the (f+1)-th highest of their views (Castro's join
  rule, with no limit on how far: a replica that slept through many views catches up in
  one step, even when nobody is working in any view).
* 2f+1 replicas, us included, at our view or beyond and no NEW-VIEW: after the view-change
  timeout (doubled each time) try the next view. With fewer, no view can form, and moving
  on alone would only run away from the others.

A restarted replica (see ``pbft_log``) comes back in the view it had entered: working in
it as a backup, or changing to it; a primary that worked in its view comes back changing
to the next one, since it cannot know what it proposed. These rules then bring it and the
others together however many replicas crashed and in whatever views they stopped, as soon
as 2f+1 of them run.
"""
from plugpay.host.pbft_wire import NULL_BATCH, digest, is_digest, is_list, is_uint


class ViewChanges:
    """The view-change half of ``pbft.Engine``."""

    def _enter_view(self, view, active):
        """Every move to a view goes through here: it is on disk before we speak in it."""
        self.view = view
        self.active = active
        self.log.set_view(view, active)

    def _start_view_change(self, view, now, out):
        if view < self.view or (view == self.view and not self.active):
            return
        self.stats["view_changes"] += 1
        self._enter_view(view, False)
        self.req_deadline = None
        self.vc_deadline = None
        self.queue, self.proposed = [], set()
        stable_seq = self.stable[0]
        ckpts = dict(self.own_ckpts)
        ckpts[stable_seq] = self.stable[1]
        c = [[s, d] for s, d in sorted(ckpts.items()) if s >= stable_seq]
        p = [[s, v, d, b] for s, (v, d, b) in sorted(self.pset.items()) if s > stable_seq]
        q = [[s, v, d] for s, dv in sorted(self.qset.items()) if s > stable_seq
             for d, v in sorted(dv.items())]
        vc = self.my_vc = ["vc", view, stable_seq, c, p, q]
        self._broadcast(vc, out)
        self._record_view_change(self.id, vc, now, out)
        self._arm_view_timer(now)

    def _valid_view_change(self, msg):
        window = self.cfg.watermark_window
        if len(msg) != 6 or not is_uint(msg[1]) or not is_uint(msg[2]):
            return False
        c, p, q = msg[3], msg[4], msg[5]
        if not (is_list(c, window) and is_list(p, window) and is_list(q, 4 * window)):
            return False
        for e in c:
            if not (type(e) is list and len(e) == 2 and is_uint(e[0]) and is_digest(e[1])):
                return False
        seen = set()
        for e in p:
            if not (type(e) is list and len(e) == 4 and is_uint(e[0]) and is_uint(e[1])
                    and is_digest(e[2]) and self._valid_batch(e[3]) and e[0] not in seen
                    and digest(e[3]) == e[2]):
                return False
            seen.add(e[0])
        for e in q:
            if not (type(e) is list and len(e) == 3 and is_uint(e[0]) and is_uint(e[1])
                    and is_digest(e[2])):
                return False
        return True

    def _on_view_change(self, sender, msg, now, out):
        if not self._valid_view_change(msg):
            return False
        self._record_view_change(sender, msg, now, out)
        return True

    def _record_view_change(self, sender, vc, now, out):
        view = vc[1]
        if self.my_nv is not None and self.my_nv[1] == view and sender != self.id:
            out.append((sender, self.my_nv))  # it missed our NEW-VIEW
        if sender != self.id:
            self._claim(sender, view, False, now, out)
        # Kept only up to n views ahead (memory); the sender re-sends it while it waits.
        if view < self.view or (view == self.view and self.active) or view > self.view + self.n:
            return
        self.vcs.setdefault(view, {})[sender] = (digest(vc), vc)
        if self.active or view != self.view:
            return
        if self.is_primary():
            by = self.vcs[view]
            decision = decide({s: m for s, (_, m) in by.items()}, self.f, self.cfg.watermark_window)
            if decision is not None:
                self.my_nv = ["nv", view, [[s, by[s][0]] for s in sorted(by)]]
                self._broadcast(self.my_nv, out)
                self._install(view, decision, now, out)
                return
        self._try_new_view(now, out)

    def _claim(self, sender, view, active, now, out):
        """``sender`` says it is in ``view`` (working in it if ``active``): keep its highest
        claim and follow what f+1 of them vouch for."""
        have = self.peer_views.get(sender)
        if have is None or (view, active) > have:
            self.peer_views[sender] = (view, active)
        f = self.f
        working = sorted((v for v, a in self.peer_views.values() if a), reverse=True)
        if len(working) > f and (working[f] > self.view or (working[f] == self.view and not self.active)):
            self._adopt_view(working[f], now, out)
            return
        views = sorted((v for v, _ in self.peer_views.values()), reverse=True)
        if len(views) > f and views[f] > self.view:
            self._start_view_change(views[f], now, out)
            return
        self._arm_view_timer(now)

    def _arm_view_timer(self, now):
        """Changing views with 2f+1 (us included) at this view or beyond: time it out."""
        if self.active or self.vc_deadline is not None:
            return
        if 1 + sum(1 for v, _ in self.peer_views.values() if v >= self.view) >= 2 * self.f + 1:
            self.vc_deadline = now + self.vc_timeout

    def _on_new_view(self, sender, msg, now, out):
        if len(msg) != 3 or not is_uint(msg[1]) or not is_list(msg[2], self.n):
            return False
        for e in msg[2]:
            if not (type(e) is list and len(e) == 2 and type(e[0]) is int
                    and 0 <= e[0] < self.n and is_digest(e[1])):
                return False
        view = msg[1]
        if sender != self.primary(view) or view < self.view or (view == self.view and self.active):
            return True
        self.nv = (view, msg[2])
        self._try_new_view(now, out)
        return True

    def _try_new_view(self, now, out):
        """Install a NEW-VIEW once we hold every VIEW-CHANGE it names, re-deciding ourselves."""
        if self.nv is None:
            return
        view, ids = self.nv
        if view < self.view or (view == self.view and self.active):
            self.nv = None
            return
        have = self.vcs.get(view, {})
        chosen = {}
        for s, d in ids:
            if s not in have or have[s][0] != d:
                return  # wait: that VIEW-CHANGE has not reached us (yet)
            chosen[s] = have[s][1]
        decision = decide(chosen, self.f, self.cfg.watermark_window) if len(chosen) == len(ids) else None
        if decision is None:
            self.stats["bad_new_views"] += 1
            self.nv = None
            return
        self._install(view, decision, now, out)

    def _install(self, view, decision, now, out):
        (ck_seq, ck_digest), chosen = decision
        self.stats["new_views"] += 1
        self._enter_view(view, True)
        self.nv = None
        self.vc_deadline = None
        self.vc_timeout = self.cfg.view_change_timeout
        self.vcs = {v: m for v, m in self.vcs.items() if v > view}
        self.pps = {k: v for k, v in self.pps.items() if k[0] >= view}
        self.votes = {k: v for k, v in self.votes.items() if k[1] >= view}
        self.sent_commit = {k for k in self.sent_commit if k[0] >= view}
        if ck_seq > self.stable[0]:
            self._make_stable(ck_seq, ck_digest, now, out)
        primary = self.is_primary()
        reissued = set()
        for seq, d, batch in chosen:
            self.pps[(view, seq)] = (d, batch)
            self._note_preprepared(seq, view, d)
            reissued.update((c, ts) for c, ts, _ in batch)
            if not primary:
                self._vote("p", view, seq, d, self.id)
                self._broadcast(["p", view, seq, d], out)
        self.seq = max([ck_seq, self.handed] + [s for s, _, _ in chosen])
        self.queue, self.proposed = [], set(reissued)
        for (client, ts), op in self.pending.items():
            if primary:
                self._enqueue(client, ts, op, now)
            elif (client, ts) not in reissued:
                out.append((self.primary(), ["fwd", client, ts, op]))
        self.req_deadline = now + self.cfg.request_timeout if self.pending else None
        for seq, _, _ in chosen:
            self._check_prepared(view, seq, now, out)
        self._propose(now, out)

    def _adopt_view(self, view, now, out):
        """Rejoin a view we slept through (restart, partition, a NEW-VIEW we could not
        check); its re-issued batches come by state transfer once the others execute them."""
        self.stats["views_adopted"] += 1
        self._enter_view(view, True)
        self.nv = None
        self.vc_deadline = None
        self.vc_timeout = self.cfg.view_change_timeout
        self.vcs = {v: m for v, m in self.vcs.items() if v > view}
        self.seq = max(self.seq, self._peers_height())
        self.queue, self.proposed = [], set()
        for (client, ts), op in self.pending.items():
            if self.is_primary():
                self._enqueue(client, ts, op, now)
            else:
                out.append((self.primary(), ["fwd", client, ts, op]))
        self.req_deadline = now + self.cfg.request_timeout if self.pending else None


def decide(vcs, f, window):
    """The new view's starting checkpoint and re-issued batches, from VIEW-CHANGEs ``vcs``
    (sender -> message), or None if they do not settle it yet. Deterministic: the new
    primary and every backup compute it from the same set.

    Castro's rules: the checkpoint is the highest one that f+1 replicas hold and that no
    more than f claim to be below; for each later sequence number, a batch prepared in view
    v is chosen if 2f+1 replicas prepared nothing that contradicts it (A1) and f+1
    pre-prepared it in view v or later (A2); a null batch if 2f+1 prepared nothing there.
    """
    msgs = list(vcs.values())
    if len(msgs) < 2 * f + 1:
        return None
    checkpoint = None
    for seq, d in sorted({(c[0], c[1]) for m in msgs for c in m[3]}, reverse=True):
        if sum(1 for m in msgs if m[2] <= seq) >= 2 * f + 1 and \
                sum(1 for m in msgs if [seq, d] in m[3]) >= f + 1:
            checkpoint = (seq, d)
            break
    if checkpoint is None:
        return None
    low = checkpoint[0]
    prepared = [{e[0]: e for e in m[4]} for m in msgs]
    preprepared = [{(e[0], e[2]): e[1] for e in m[5]} for m in msgs]
    top = max([e[0] for m in msgs for e in m[4] if low < e[0] <= low + window] or [low])
    chosen = []
    for seq in range(low + 1, top + 1):
        candidates = sorted({(e[1], e[2]) for p in prepared for e in p.values() if e[0] == seq},
                            reverse=True)
        pick = None
        for view, d in candidates:
            a1 = sum(1 for m, p in zip(msgs, prepared) if m[2] < seq and (
                seq not in p or p[seq][1] < view or (p[seq][1] == view and p[seq][2] == d)))
            a2 = sum(1 for q in preprepared if q.get((seq, d), -1) >= view)
            if a1 >= 2 * f + 1 and a2 >= f + 1:
                batch = next(p[seq][3] for p in prepared if seq in p and p[seq][2] == d)
                pick = (seq, d, batch)
                break
        if pick is None:
            if sum(1 for m, p in zip(msgs, prepared) if m[2] < seq and seq not in p) < 2 * f + 1:
                return None
            pick = (seq, digest(NULL_BATCH), NULL_BATCH)
        chosen.append(pick)
    return checkpoint, chosen
