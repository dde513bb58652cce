"""Break the code on purpose, once per mutation, and check that the tests notice.

    python tests/mutations.py            # every mutation
    python tests/mutations.py --only 3   # one of them (see --list)

Each mutation edits a temporary copy of the project (the working tree, not only what is committed), runs the tests
named for it there, and is reported `caught` when at least one of them fails, `survived` when all pass. A mutation
whose text is no longer in the code is reported `stale`: update it beside the code it targets. A tool for developers,
not part of `pytest`'s default run (its file name does not start with `test_`). Exit code 1 unless all are caught.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Mutation:
    name: str
    path: str  # file to edit, relative to the project root
    edits: list[tuple[str, str]]  # (text that must occur exactly once, its replacement)
    tests: list[str]  # pytest node ids that should catch it


MUTATIONS = [
    Mutation(
        "padding mask ignored in batched decoding",
        "transformer/model.py",
        [("src_mask = padding_mask(src)", "src_mask = padding_mask(src) | True")],
        ["tests/test_decoding.py", "tests/test_robustness.py"],
    ),
    Mutation(
        "outputs returned in length order instead of input order",
        "transformer/translator.py",
        [("outputs[row] = hyp", "outputs[order.index(row)] = hyp")],
        ["tests/test_robustness.py", "tests/test_end_to_end.py"],
    ),
    Mutation(
        "epoch counter reset on resume",
        "transformer/prepare.py",
        [('    log.info("resumed at step', '    progress.epoch = 0\n    log.info("resumed at step')],
        ["tests/test_resume.py::test_resume_ends_with_the_same_weights_bit_for_bit_across_epochs"],
    ),
    Mutation(
        "a non-finite step not skipped (Adam updates with NaN gradients, the error comes after)",
        "transformer/optimization.py",
        [("optimizer.found_inf = (~(loss_ok & grads_ok)).float()", "optimizer.found_inf = None")],
        ["tests/test_training.py"],
    ),
    Mutation(
        "non-finite dev loss accepted",
        "transformer/trainer.py",
        [("if not math.isfinite(loss):", "if False:")],
        ["tests/test_training.py"],
    ),
    Mutation(
        "last.pt copied over the old file instead of renamed (not atomic)",
        "transformer/files.py",
        [("os.replace(partial, path)", "__import__('shutil').copyfile(partial, path)")],
        ["tests/test_checkpoint.py", "tests/test_resume.py::test_sigkill_while_saving_leaves_a_run_that_resumes"],
    ),
    Mutation(
        "a failed write leaves its temporary file behind",
        "transformer/files.py",
        [("        partial.unlink(missing_ok=True)\n", "        pass\n")],
        [
            "tests/test_checkpoint.py::test_a_real_failed_write_is_one_line_and_keeps_the_previous_checkpoint",
            "tests/test_broken_files.py::test_training_on_a_truncated_corpus_writes_nothing",
        ],
    ),
    Mutation(
        "checkpoint written in place (not atomic)",
        "transformer/checkpoint.py",
        [("**state}, writer)", "**state}, path)")],
        ["tests/test_checkpoint.py"],
    ),
    Mutation(
        "torch's RuntimeError on a failed write not caught",
        "transformer/checkpoint.py",
        [("except (OSError, RuntimeError) as e:", "except OSError as e:")],
        ["tests/test_checkpoint.py"],
    ),
    Mutation(
        "checkpoints loaded with pickle's code execution",
        "transformer/checkpoint.py",
        [('map_location="cpu", weights_only=True', 'map_location="cpu", weights_only=False')],
        ["tests/test_checkpoint.py::test_a_checkpoint_never_runs_code_when_loaded"],
    ),
    Mutation(
        "untied output projection",
        "transformer/model.py",
        [
            (
                "self.embedding = nn.Embedding(vocab_size, d, padding_idx=PAD_ID)",
                "self.embedding = nn.Embedding(vocab_size, d, padding_idx=PAD_ID)\n"
                "        self.output = nn.Linear(d, vocab_size, bias=False)",
            ),
            ("logits = F.linear(states, self.embedding.weight)", "logits = self.output(states)"),
            ("projected_loss_sum(states, self.embedding.weight,", "projected_loss_sum(states, self.output.weight,"),
        ],
        ["tests/test_model.py"],
    ),
    Mutation(
        "causal mask dropped from decoder self-attention",
        "transformer/model.py",
        [("self_mask = causal_mask(", "self_mask = ~causal_mask(0, 0, tgt.device) | causal_mask(")],
        ["tests/test_model.py"],
    ),
    Mutation(
        "beam search: the cache does not follow the beams",
        "transformer/decoding.py",
        [("            cache.reorder(flat,", "            cache.reorder(flat.sort().values,")],
        ["tests/test_beam.py"],
    ),
    Mutation(
        "beam search: finished hypotheses taken from all 2k candidates",
        "transformer/decoding.py",
        [
            (
                "ended_by_eos = is_eos[:, :k] & top_scores[:, :k].isfinite()",
                "ended_by_eos = is_eos & top_scores.isfinite()",
            ),
            (
                "log_prob = torch.cat([top_scores[:, :k], next_scores], 1)",
                "log_prob = torch.cat([top_scores, next_scores], 1)",
            ),
            ("torch.cat([first_rows + top_beams[:, :k], rows], 1)", "torch.cat([first_rows + top_beams, rows], 1)"),
            (
                "torch.cat([torch.full_like(next_ids, EOS_ID), next_ids], 1)",
                "torch.cat([top_beams * 0 + EOS_ID, next_ids], 1)",
            ),
        ],
        ["tests/test_beam.py::test_beam_search_equals_the_textbook_algorithm_where_eos_is_anywhere"],
    ),
    Mutation(
        "beam search: a sentence stops at its first finished hypothesis",
        "transformer/decoding.py",
        [("settled = nth_best.isfinite() & (", "settled = finished.scores[sentences, 0].isfinite() | (")],
        ["tests/test_beam.py"],
    ),
    Mutation(
        "sampling: top-k keeps one piece too many",
        "transformer/decoding.py",
        [("ranked[:, top_k:] = float", "ranked[:, top_k + 1 :] = float")],
        ["tests/test_sampling.py"],
    ),
    Mutation(
        "sampling: the nucleus stops before the piece that reaches top_p",
        "transformer/decoding.py",
        [("probs.cumsum(-1) - probs >= top_p", "probs.cumsum(-1) >= top_p")],
        ["tests/test_sampling.py"],
    ),
    Mutation(
        "sampling: the temperature multiplies the logits",
        "transformer/decoding.py",
        [("logits.float() / sampling.temperature", "logits.float() * sampling.temperature")],
        ["tests/test_sampling.py"],
    ),
    Mutation(
        "sampling: the seed ignored",
        "transformer/decoding.py",
        [("torch.Generator(device).manual_seed(sampling.seed)", "torch.Generator(device).manual_seed(0)")],
        ["tests/test_sampling.py"],
    ),
    Mutation(
        "sampling: noise drawn for the sentences still decoding only (a draw depends on when the others end)",
        "transformer/decoding.py",
        [
            (
                "torch.rand((batch, logits.size(-1)), generator=generator, device=device)[alive]",
                "torch.rand((alive.size(0), logits.size(-1)), generator=generator, device=device)",
            )
        ],
        ["tests/test_sampling.py"],
    ),
    Mutation(
        "sampling: every batch of a call draws from the user's seed itself",
        "transformer/translator.py",
        [("seed=batch_seed(dec.seed, batch))", "seed=dec.seed)")],
        ["tests/test_sampling.py"],
    ),
    Mutation(
        "sampling accepted with a beam (the beam search runs, ignoring the temperature)",
        "transformer/translator.py",
        [("if decoding.temperature > 0 and decoding.beam_size > 1:", "if False:")],
        ["tests/test_sampling.py", "tests/test_serve.py"],
    ),
    Mutation(
        "serving: sampled requests share a Translator call (a request's draws depend on the others)",
        "transformer/serving.py",
        [("id(job) if job.sampled else ", "")],
        ["tests/test_serve.py"],
    ),
    Mutation(
        "serving: a sampling setting's range not checked",
        "transformer/serving.py",
        [("        if not ok(value):\n", "        if False:\n")],
        ["tests/test_serve.py"],
    ),
    Mutation(
        "streaming: a chunk waits until it is full",
        "transformer/text.py",
        [("if lines and waits and not select", "if False and lines and waits and not select")],
        ["tests/test_streaming.py"],
    ),
    Mutation(
        "serving: every request of a batch gets the first request's translations",
        "transformer/serving.py",
        [("                start += len(job.sentences)\n", "")],
        ["tests/test_serve.py"],
    ),
    Mutation(
        "serving: one translation dropped",
        "transformer/serving.py",
        [
            (
                ".with_search(**group[0].search).translate(sentences)",
                ".with_search(**group[0].search).translate(sentences)[:-1]",
            )
        ],
        ["tests/test_serve.py"],
    ),
    Mutation(
        "serving: attention in the JSON re-normalized (the decoder's then reads the future)",
        "transformer/serving.py",
        [("weights = maps[kind].weights.double()", "weights = maps[kind].weights.double().softmax(-1)")],
        ["tests/test_serve.py::test_attention_rows_sum_to_one_and_the_decoder_reads_only_the_past"],
    ),
    Mutation(
        "serving: the sentence limit off by one",
        "transformer/serving.py",
        [("if len(text) > limits.max_sentences:", "if len(text) >= limits.max_sentences:")],
        ["tests/test_serve.py::test_each_limit_is_a_4xx_naming_it"],
    ),
    Mutation(
        "serving: a chunked body read past the limit",
        "transformer/serving.py",
        [("        if len(body) > limit:", "        if False:")],
        ["tests/test_serve.py::test_each_limit_is_a_4xx_naming_it"],
    ),
    Mutation(
        "serving: sentences that are not strings reach the model",
        "transformer/serving.py",
        [("    if not isinstance(text, str):", "    if text is None:")],
        ["tests/test_serve.py"],
    ),
    Mutation(
        "serve.py: listens on every interface by default",
        "transformer/commands/serve.py",
        [('"--host", default="127.0.0.1"', '"--host", default="0.0.0.0"')],
        ["tests/test_serve_script.py::test_it_listens_on_localhost_only_and_says_so"],
    ),
    Mutation(
        "page: the mean over heads divides by the wrong count",
        "transformer/serve_page.html",
        [("0) / layer.length));", "0) / 2));")],
        ["tests/test_serve_script.py::test_the_page_translates_and_draws_attention_in_a_real_browser"],
    ),
    Mutation(
        "cached piece ids not keyed by the tokenizer",
        "transformer/corpus_cache.py",
        [('f"ids-{hashlib.sha256(tokenizer.model_bytes).hexdigest()[:16]}"', '"ids"')],
        ["tests/test_corpus_cache.py::test_a_changed_corpus_tokenizer_or_max_len_is_not_served_stale"],
    ),
    Mutation(
        "batch plan sorts by source length only, ties not in the seeded order",
        "transformer/data.py",
        [("np.lexsort((data.tgt_lens[order], data.src_lens[order]))", "np.argsort(data.src_lens[order])")],
        ["tests/test_data.py::test_the_plan_from_length_arrays_equals_the_list_based_plan"],
    ),
    Mutation(
        "tokenizer sample left to SentencePiece's own reservoir (another sample in each process)",
        "transformer/corpus_cache.py",
        [("    if 2 * len(text) > sample:", "    if False:")],
        ["tests/test_corpus_cache.py::test_the_tokenizer_trains_on_a_random_sample_when_the_corpus_is_larger"],
    ),
    Mutation(
        "a second start reads the corpus again",
        "transformer/corpus_cache.py",
        [("    if path.is_file():\n        text = datasets", "    if False:\n        text = datasets")],
        ["tests/test_corpus_cache.py::test_a_second_start_reads_nothing_but_the_cache"],
    ),
    Mutation(
        "CTranslate2 beam search with the batch's largest length limit, cut afterwards",
        "transformer/deploy.py",
        [("for group in [rows] if self.beam_size == 1 else by_limit:", "for group in [rows]:")],
        ["tests/test_deploy.py::test_the_float32_export_translates_as_ours_token_for_token"],
    ),
    Mutation(
        "training.clip_norm ignored (gradients never clipped)",
        "transformer/optimization.py",
        [("(parameters, training.clip_norm or math.inf)", "(parameters, math.inf)")],
        ["tests/test_training.py::test_the_update_sees_gradients_clipped_to_clip_norm"],
    ),
    Mutation(
        "export writes into a folder holding files it did not write (the converter empties it)",
        "transformer/deploy.py",
        [("    _check_export_target(out)  # before", "    # before")],
        ["tests/test_user_files.py::test_export_refuses_a_folder_holding_files_it_did_not_write_and_replaces_its_own"],
    ),
    Mutation(
        "checkpoints loaded without checking their records' CRC-32",
        "transformer/checkpoint.py",
        [("    _verify_records(path)\n", "")],
        ["tests/test_user_files.py::test_a_damaged_checkpoint_is_one_line_for_every_command_that_reads_it"],
    ),
    Mutation(
        "a key written twice in a config: the last one wins silently",
        "transformer/config.py",
        [('name != "<<" and name in lines:', 'name != "<<" and name in lines and False:')],
        ["tests/test_config.py::test_a_key_given_twice_is_one_line_with_both_line_numbers"],
    ),
    Mutation(
        "YAML aliases expanded without a bound",
        "transformer/config.py",
        [("    if total > MAX_YAML_VALUES:", "    if False:")],
        ["tests/test_config.py::test_an_alias_bomb_is_refused_in_one_short_line"],
    ),
    Mutation(
        "the run directory's lock is shared: two trainings write into one folder",
        "transformer/prepare.py",
        [("fcntl.LOCK_EX | fcntl.LOCK_NB", "fcntl.LOCK_SH | fcntl.LOCK_NB")],
        ["tests/test_user_files.py::test_a_second_training_into_a_held_run_directory_is_one_line_and_writes_nothing"],
    ),
    Mutation(
        "the wheel's venv sees the base interpreter's packages, not the venv's the tests run in",
        "tests/test_install.py",
        [
            ('"venv", "--without-pip"', '"venv", "--system-site-packages", "--without-pip"'),
            ('(purelib / "outer.pth").write_text', "len"),
        ],
        ["tests/test_install.py::test_a_wheel_in_a_fresh_venv_trains_translates_and_scores_through_its_command"],
    ),
    Mutation(
        "the thread count never follows the machine's load",
        "transformer/threads.py",
        [("            torch.set_num_threads(threads)\n", "")],
        ["tests/test_user_files.py::test_a_busy_loop_beside_training_takes_a_thread_away_and_its_end_gives_it_back"],
    ),
    Mutation(
        "the warm-up ignores the budget (a slow machine never reaches the peak learning rate)",
        "transformer/optimization.py",
        [("warm = max(warm, spent / warmup_share)", "warm = warm")],
        ["tests/test_training.py::test_a_slow_machine_still_warms_up_to_near_the_peak"],
    ),
    Mutation(
        "benchmark --profile: the optimizer's time counted as elementwise",
        "transformer/benchmarking.py",
        [('REGIONS = ("data", "optimizer", "loss")', 'REGIONS = ("data", "loss")')],
        ["tests/test_benchmark.py::test_the_benchmark_reports_training_and_decoding_on_the_device_it_was_given"],
    ),
    Mutation(
        "--init-from: the new run starts from fresh weights",
        "transformer/prepare.py",
        [("trained.build_model(config.model) if trained else", "trained.build_model(config.model) if checkpoint else")],
        ["tests/test_init_from.py::test_the_first_step_of_a_run_from_a_trained_model_has_that_models_loss"],
    ),
    Mutation(
        "--init-from: the new run trains a tokenizer of its own",
        "transformer/prepare.py",
        [
            (
                "tokenizer = trained.tokenizer if trained is not None",
                "tokenizer = checkpoint.tokenizer if checkpoint is not None",
            )
        ],
        ["tests/test_init_from.py::test_the_first_step_of_a_run_from_a_trained_model_has_that_models_loss"],
    ),
    Mutation(
        "--init-from: the new run takes the source's optimizer and step",
        "transformer/prepare.py",
        [
            (
                "Progress() if checkpoint is None else _restore(checkpoint,",
                "Progress() if trained is None else _restore(trained,",
            )
        ],
        ["tests/test_init_from.py::test_the_first_step_of_a_run_from_a_trained_model_has_that_models_loss"],
    ),
    Mutation(
        "--init-from: the EMA average restarts from the weights instead of the source's average",
        "transformer/prepare.py",
        [
            (
                'and trained is not None and "ema" in trained.state',
                'and checkpoint is not None and "ema" in trained.state',
            )
        ],
        ["tests/test_init_from.py::test_the_first_step_of_a_run_from_a_trained_model_has_that_models_loss"],
    ),
    Mutation(
        "--init-from: a --set that contradicts the model's shape is overridden without a word",
        "transformer/prepare.py",
        [("        if key in given_keys:\n", "        if False:\n")],
        ["tests/test_init_from.py::test_a_set_that_contradicts_the_models_shape_is_one_line"],
    ),
    Mutation(
        "--resume with --init-from accepted (the resume silently ignores --init-from)",
        "transformer/prepare.py",
        [("    if resume and init_from is not None:\n", "    if False:\n")],
        ["tests/test_init_from.py::test_resume_and_init_from_together_are_one_line"],
    ),
    Mutation(
        "a resumed run from a trained model forgets where it started",
        "transformer/prepare.py",
        [('checkpoint.state.get("init_from")', "None")],
        ["tests/test_init_from.py::test_a_run_from_a_trained_model_resumes_exactly_and_keeps_where_it_started"],
    ),
    Mutation(
        "TensorBoard: scalars logged without their step",
        "transformer/run_files.py",
        [
            (
                'add_scalar(f"{record[\'type\']}/{key}", value, record["step"])',
                "add_scalar(f\"{record['type']}/{key}\", value)",
            )
        ],
        ["tests/test_tensorboard.py::test_events_hold_each_scalar_at_its_step_and_the_attention_images"],
    ),
    Mutation(
        "TensorBoard: no attention images",
        "transformer/trainer.py",
        [("        if self.files.events is not None:  # with", "        if False:  # with")],
        ["tests/test_tensorboard.py::test_events_hold_each_scalar_at_its_step_and_the_attention_images"],
    ),
    Mutation(
        "TensorBoard: a resumed run shows a killed session's steps after the checkpoint twice",
        "transformer/run_files.py",
        [("purge_step=self.first_step + 1 if self.first_step else None", "purge_step=None")],
        ["tests/test_tensorboard.py::test_a_resumed_run_hides_what_a_killed_session_logged_after_its_last_checkpoint"],
    ),
    Mutation(
        "data.init_mix forgotten on --resume (the resumed run trains on other data than it started with)",
        "transformer/prepare.py",
        [("if config.data.init_mix and origin is not None", "if config.data.init_mix and source is not None")],
        [
            "tests/test_init_from.py::test_init_mix_draws_its_share_from_the_models_own_corpus_and_a_resume_draws_the_same"
        ],
    ),
    Mutation(
        "data.init_mix draws from the new corpus instead of the model's own",
        "transformer/prepare.py",
        [
            (
                "original = cached_ids(own, cached_text(own,",
                "original = cached_ids(config.data, cached_text(config.data,",
            )
        ],
        [
            "tests/test_init_from.py::test_init_mix_draws_its_share_from_the_models_own_corpus_and_a_resume_draws_the_same"
        ],
    ),
    Mutation(
        "the decoder cache forgets the earlier positions when its buffer grows",
        "transformer/layers.py",
        [("max(2 * end, 16)", "max(end, 16)"), ("grown_k[:, :, :start], grown_v[:, :, :start] = ", "_ = ")],
        ["tests/test_model.py"],
    ),
    Mutation(
        "a broken compiler toolchain is not checked before compiling",
        "transformer/device.py",
        [("if (problem := compiler_problem(device)) is not None:", "if (problem := None) is not None:")],
        ["tests/test_training.py::test_compile_true_without_a_compiler_trains_eagerly_after_one_line"],
    ),
    Mutation(
        "compile: auto compiles whatever the trial and the budget say",
        "transformer/device.py",
        [("    pays = saved > COMPILES * compiling", "    pays = True")],
        ["tests/test_training.py::test_compile_auto_weighs_a_timed_trial_against_the_budget"],
    ),
    Mutation(
        "a checkpoint whose weights hold nan is loaded",
        "transformer/checkpoint.py",
        [("and not bool(tensor.isfinite().all())", "and False")],
        ["tests/test_checkpoint.py::test_a_checkpoint_with_nan_weights_is_refused_not_translated_into_empty_lines"],
    ),
    Mutation(
        "a new training writes over files no run wrote",
        "transformer/prepare.py",
        [("if not resume and theirs and (taken :=", "if False and (taken :=")],
        ["tests/test_user_files.py::test_a_new_training_never_writes_over_files_no_run_wrote"],
    ),
    Mutation(
        "translate writes over the file it reads",
        "transformer/commands/translate.py",
        [("and os.path.samefile(args.input, args.output):", "and False:")],
        ["tests/test_user_files.py::test_translate_never_writes_over_the_file_it_reads"],
    ),
    Mutation(
        "bf16 training on a CPU goes back to the slow fused attention kernel",
        "transformer/attention.py",
        [('return device.type != "cpu" or dtype != torch.bfloat16 or not backward', "return True")],
        ["tests/test_attention.py::test_bf16_training_on_a_cpu_takes_the_explicit_path_and_keeps_its_masks"],
    ),
    Mutation(
        "under bf16 autocast the loss adds nothing to the output matrix's gradient",
        "transformer/loss.py",
        [("grad_weight += grad.t() @ h  #", "grad_weight += 0 * grad.t() @ h  #")],
        ["tests/test_loss.py::test_the_chunked_projection_loss_under_bf16_autocast_stays_close_to_fp32"],
    ),
]


def copy_project(target: Path) -> None:
    skipped = (".git", ".venv", "runs", "__pycache__", "*.egg-info", ".pytest_cache", ".hypothesis")
    ignore = shutil.ignore_patterns(*skipped)
    shutil.copytree(ROOT, target, ignore=ignore)


def apply(mutation: Mutation, root: Path) -> bool:
    path = root / mutation.path
    text = path.read_text()
    for old, new in mutation.edits:
        if text.count(old) != 1:
            return False
        text = text.replace(old, new)
    path.write_text(text)
    return True


def run(mutation: Mutation) -> tuple[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        copy_project(root)
        if not apply(mutation, root):
            return "stale", "the text to mutate is not in the code (exactly once)"
        env = {**os.environ, "PYTHONPATH": str(root)}  # the copy's package, not an installed one
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutation.tests]
        result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
        failed = [line.split(" - ")[0] for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        if result.returncode == 0:
            return "survived", "all passed"
        return "caught", ", ".join(failed) or result.stdout.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", type=int, action="append", help="run only mutation N (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutations and stop")
    args = parser.parse_args()
    if args.list:
        for i, m in enumerate(MUTATIONS, 1):
            print(f"{i:2d}. {m.name}  ({m.path})")
        return 0
    chosen = [(i, m) for i, m in enumerate(MUTATIONS, 1) if not args.only or i in args.only]
    outcomes = []
    for i, mutation in chosen:
        start = time.perf_counter()
        outcome, detail = run(mutation)
        outcomes.append(outcome)
        print(f"{i:2d}. {outcome:8s} {mutation.name}  [{time.perf_counter() - start:.0f} s]  {detail}", flush=True)
    print(f"{outcomes.count('caught')} caught, {len(outcomes) - outcomes.count('caught')} not caught")
    return 0 if all(o == "caught" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
