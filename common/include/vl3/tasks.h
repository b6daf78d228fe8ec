/* tasks.h: the one task catalogue of vl3d: the kinds of answer a job can ask for, their names in
 * jobs, the worker protocol, the results table and the CLI, and which need a question. Shared by
 * the protocol (common), the daemon, the worker and the engine (whose engine/src/tasks.c holds
 * each task's instruction text). */
#ifndef VL3_TASKS_H
#define VL3_TASKS_H

enum vl3_task {
    VL3_TASK_CAPTION,
    VL3_TASK_OCR,
    VL3_TASK_CHART_QA, /* needs a question */
    VL3_TASK_QA,       /* needs a question: the question is the whole instruction */
    VL3_TASK_COUNT
};

/* "caption", "ocr", "chart_qa", "qa"; NULL for anything else. */
const char *vl3_task_name(int task);
/* The task of a name, or -EINVAL. */
int vl3_task_parse(const char *name);
/* Whether the task needs a question (chart_qa, qa); 0 for an unknown task. */
int vl3_task_needs_question(int task);

#endif
