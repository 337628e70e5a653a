"""LongBench v1 (Bai et al., 2023): the 15 English tasks EM-LLM reports, from the official JSONL files.

Prompts, generation budgets, chat-template exceptions and metrics are LongBench's own
(``config/dataset2prompt.json``, ``dataset2maxlen.json``, ``eval.py``) as used by InfLLM/EM-LLM:
trec, triviaqa, samsum, lcc and repobench-p get a raw completion prompt (no chat template); trec,
triviaqa and samsum are scored on the first line of the answer; samsum stops at a newline.
Over-long prompts are truncated in the middle by the runner when a length is given (LongBench's rule).

Files: ``DIR/<task>.jsonl`` (or ``DIR/data/<task>.jsonl``) from the official ``data.zip``
(Hugging Face dataset ``THUDM/LongBench``); ``memalign bench download longbench DIR`` fetches it when online.
Row fields: ``input, context, answers, length, dataset, language, all_classes, _id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from memalign.bench.loaders.common import build_records, find_jsonl, read_rows, register_suite_tasks, split_template
from memalign.bench.records import Record
from memalign.bench.tasks.base import TaskContext

HINT = (
    "Download LongBench v1's data.zip (Hugging Face dataset THUDM/LongBench) and unzip it into that folder, "
    "or run `memalign bench download longbench DIR` where the hub is reachable."
)


@dataclass(frozen=True)
class LongBenchSpec:
    prompt: str
    max_new_tokens: int
    metric: str
    chat: bool = True
    first_line: bool = False
    stop_newline: bool = False


_QA_PASSAGES = (
    "Answer the question based on the given passages. Only give me the answer and do not output any other "
    "words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given "
    "passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:"
)

SPECS: dict[str, LongBenchSpec] = {
    "narrativeqa": LongBenchSpec(
        "You are given a story, which can be either a novel or a movie script, and a question. Answer the question as "
        "concisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nStory: {context}"
        "\n\nNow, answer the question based on the story as concisely as you can, using a single phrase if possible. "
        "Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:",
        128,
        "qa_f1",
    ),
    "qasper": LongBenchSpec(
        "You are given a scientific article and a question. Answer the question as concisely as you can, using a "
        "single phrase or sentence if possible. If the question cannot be answered based on the information in the "
        'article, write "unanswerable". If the question is a yes/no question, answer "yes", "no", or '
        '"unanswerable". Do not provide any explanation.\n\nArticle: {context}\n\n Answer the question based on the '
        "above article as concisely as you can, using a single phrase or sentence if possible. If the question cannot "
        'be answered based on the information in the article, write "unanswerable". If the question is a yes/no '
        'question, answer "yes", "no", or "unanswerable". Do not provide any explanation.\n\nQuestion: {input}'
        "\n\nAnswer:",
        128,
        "qa_f1",
    ),
    "multifieldqa_en": LongBenchSpec(
        "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question based on the "
        "above text, only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
        64,
        "qa_f1",
    ),
    "hotpotqa": LongBenchSpec(_QA_PASSAGES, 32, "qa_f1"),
    "2wikimqa": LongBenchSpec(_QA_PASSAGES, 32, "qa_f1"),
    "musique": LongBenchSpec(_QA_PASSAGES, 32, "qa_f1"),
    "gov_report": LongBenchSpec(
        "You are given a report by a government agency. Write a one-page summary of the report.\n\nReport:\n{context}"
        "\n\nNow, write a one-page summary of the report.\n\nSummary:",
        512,
        "rouge_l",
    ),
    "qmsum": LongBenchSpec(
        "You are given a meeting transcript and a query containing a question or instruction. Answer the query in one "
        "or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on the above meeting transcript "
        "in one or more sentences.\n\nQuery: {input}\nAnswer:",
        512,
        "rouge_l",
    ),
    "multi_news": LongBenchSpec(
        "You are given several news passages. Write a one-page summary of all news. \n\nNews:\n{context}\n\nNow, "
        "write a one-page summary of all the news.\n\nSummary:",
        512,
        "rouge_l",
    ),
    "trec": LongBenchSpec(
        "Please determine the type of the question below. Here are some examples of questions.\n\n{context}\n{input}",
        64,
        "classification",
        chat=False,
        first_line=True,
    ),
    "triviaqa": LongBenchSpec(
        "Answer the question based on the given passage. Only give me the answer and do not output any other words. "
        "The following are some examples.\n\n{context}\n\n{input}",
        32,
        "qa_f1",
        chat=False,
        first_line=True,
    ),
    "samsum": LongBenchSpec(
        "Summarize the dialogue into a few short sentences. The following are some examples.\n\n{context}\n\n{input}",
        128,
        "rouge_l",
        chat=False,
        first_line=True,
        stop_newline=True,
    ),
    "passage_retrieval_en": LongBenchSpec(
        "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the abstract "
        "is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the number of the "
        'paragraph that the abstract is from. The answer format must be like "Paragraph 1", "Paragraph 2", etc.'
        "\n\nThe answer is: ",
        32,
        "retrieval",
    ),
    "lcc": LongBenchSpec(
        "Please complete the code given below. \n{context}Next line of code:\n", 64, "code_sim", chat=False
    ),
    "repobench-p": LongBenchSpec(
        "Please complete the code given below. \n{context}{input}Next line of code:\n", 64, "code_sim", chat=False
    ),
}

FIELDS: dict[str, type | tuple[type, ...]] = {
    "input": str,
    "context": str,
    "answers": (list, str),
    "all_classes": (list, type(None)),
}


def load_longbench(task: str, ctx: TaskContext, n: int) -> list[Record]:
    spec = SPECS[task]
    path = find_jsonl(ctx.data_dir, task, "LongBench", HINT)

    def build(lineno: int, row: dict[str, Any]) -> Record:
        head, tail = split_template(spec.prompt, {"input": row["input"]})
        answers = row["answers"] if isinstance(row["answers"], list) else [row["answers"]]
        return Record(
            context=head + row["context"],
            question=tail,
            answer_prefix="",
            answer=[str(a) for a in answers],
            max_new_tokens=spec.max_new_tokens,
            task=f"longbench:{task}",
            metric=spec.metric,
            id=str(row.get("_id") or f"{task}-{lineno - 1}"),
            chat_template=spec.chat,
            stop=["\n"] if spec.stop_newline else [],
            meta={"all_classes": row.get("all_classes"), "first_line": spec.first_line, "length": row.get("length")},
        )

    return build_records(path, read_rows(path, FIELDS, n), build)


register_suite_tasks("longbench", "LongBench v1", SPECS, load_longbench, HINT)
