"""Multi-turn chat workload for tools/loadgen.py (--multiturn).

N conversations; each starts with one of a few shared system prompts (round robin) and a
user message, and every later turn sends the whole history again: the previous turns'
messages, the assistant's previous answer (the text streamed back) and a new user message.
So histories grow turn by turn, and a request shares a long prefix with its
conversation's previous request and with every conversation on the same system prompt:
the case prefix caching and cache-aware routing are for (SGLang's and Dynamo's
multi-turn benchmarks). Up to --concurrency conversations run at once; a conversation's
turns run one after the other.

The prefix hit rate comes from the server's /metrics (troupe_prefix_cache_hits_total /
troupe_prefix_cache_queries_total over all replicas, the difference across the pass), with
the router's decisions (troupe_router_routed_total by reason) when it exports them.
"""
import asyncio
import random
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Tuple

from prom_text import METRIC_LINE, fetch, label  # tools/prom_text.py, beside this file

# Words that are one token each in GPT-2-style BPE vocabularies (as loadgen.WORDS).
WORDS = ("the of and to in is on at it as be by we he an or if so no up do go me my us "
         "one two six ten red big old new day way man art sun sea car dog cat box cup").split()


@dataclass
class Conversation:
    """One conversation: its system prompt, its user messages, and the history so far."""
    system: str
    users: List[str]
    messages: List[dict] = field(default_factory=list)


def add_arguments(p, positive_int) -> None:
    """loadgen's --multiturn flags."""
    p.add_argument("--multiturn", type=positive_int, metavar="N",
                   help="multi-turn chat workload of N conversations (chat endpoint; tools/multiturn.py)")
    p.add_argument("--turns", type=positive_int, default=4, help="--multiturn: turns per conversation (default: 4)")
    p.add_argument("--system-prompts", type=positive_int, default=2, help="--multiturn: shared system prompts (default: 2)")
    p.add_argument("--system-len", type=positive_int, default=200, help="--multiturn: system prompt words (default: 200)")
    p.add_argument("--user-len", type=positive_int, default=24, help="--multiturn: words per user message (default: 24)")


async def run_pass(session, args, concurrency: int, rng: random.Random, send) -> Tuple[list, dict]:
    """One pass (fresh conversations from `rng`): every Result and the prefix-cache summary
    over the pass (cache_summary of /metrics before and after)."""
    convs = make_conversations(args.multiturn, args.turns, args.system_prompts, args.system_len, args.user_len, rng)
    before = await scrape(session, args.base_url)
    sent = await run_conversations(convs, concurrency, send)
    after = await scrape(session, args.base_url)
    return [r for _, r in sent], cache_summary(before, after)


def words(n: int, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def make_conversations(n: int, turns: int, n_system: int, system_len: int, user_len: int,
                       rng: random.Random) -> List[Conversation]:
    """n conversations over n_system shared system prompts of system_len words, each with
    `turns` user messages of user_len words."""
    systems = [f"You are assistant number {i}. " + words(system_len, rng) for i in range(n_system)]
    return [Conversation(systems[i % n_system], [words(user_len, rng) for _ in range(turns)]) for i in range(n)]


async def run_conversations(convs: List[Conversation], concurrency: int,
                            send: Callable[[List[dict]], "asyncio.Future"]) -> List[Tuple[int, object]]:
    """Runs the conversations, at most `concurrency` at once; `send(messages)` sends one
    chat request and returns loadgen's Result (with .ok and .text). Returns (turn, Result)
    for every request sent. A failed turn ends its conversation."""
    queue = list(reversed(convs))
    out: List[Tuple[int, object]] = []

    async def worker():
        while queue:
            conv = queue.pop()
            conv.messages = [{"role": "system", "content": conv.system}]
            for turn, user in enumerate(conv.users):
                conv.messages.append({"role": "user", "content": user})
                res = await send(list(conv.messages))
                out.append((turn, res))
                if not res.ok:
                    break
                conv.messages.append({"role": "assistant", "content": res.text})

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(convs)))))
    return out


def parse_metrics(text: str) -> Dict[str, float]:
    """Sums of the counters this workload reports, from a Prometheus text page:
    prefix_hits, prefix_queries, and routed_<reason> for each router reason."""
    sums: Dict[str, float] = {"prefix_hits": 0.0, "prefix_queries": 0.0}
    for line in text.splitlines():
        m = METRIC_LINE.match(line.strip())
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if name == "troupe_prefix_cache_hits_total":
            sums["prefix_hits"] += value
        elif name == "troupe_prefix_cache_queries_total":
            sums["prefix_queries"] += value
        elif name == "troupe_router_routed_total":
            key = "routed_" + (label(labels, "reason") or "unknown")
            sums[key] = sums.get(key, 0.0) + value
    return sums


async def scrape(session, base_url: str) -> Dict[str, float]:
    """parse_metrics of GET /metrics; {} when the server has none."""
    text = await fetch(session, base_url)
    return parse_metrics(text) if text else {}


def cache_summary(before: Dict[str, float], after: Dict[str, float]) -> dict:
    """Prefix hit rate and routing counts over a pass (None when the server has no metrics)."""
    if not before or not after:
        return {"prefix_hit_rate": None, "prefix_hit_tokens": None, "prefix_query_tokens": None, "routed": {}}
    hits = after["prefix_hits"] - before["prefix_hits"]
    queries = after["prefix_queries"] - before["prefix_queries"]
    routed = {k[len("routed_"):]: after[k] - before.get(k, 0.0) for k in after if k.startswith("routed_")}
    return {"prefix_hit_rate": hits / queries if queries > 0 else None, "prefix_hit_tokens": hits,
            "prefix_query_tokens": queries, "routed": {k: int(v) for k, v in sorted(routed.items()) if v}}
