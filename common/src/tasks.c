/* tasks.c: names of the task catalogue (vl3/tasks.h) and which tasks need a question. */
#include <errno.h>
#include <string.h>

#include "vl3/tasks.h"

static const struct {
    const char *name;
    int needs_question;
} tasks[VL3_TASK_COUNT] = {
    [VL3_TASK_CAPTION] = {"caption", 0},
    [VL3_TASK_OCR] = {"ocr", 0},
    [VL3_TASK_CHART_QA] = {"chart_qa", 1},
    [VL3_TASK_QA] = {"qa", 1},
};

const char *vl3_task_name(int task)
{
    return task >= 0 && task < VL3_TASK_COUNT ? tasks[task].name : NULL;
}

int vl3_task_parse(const char *name)
{
    for (int i = 0; name && i < VL3_TASK_COUNT; i++)
        if (strcmp(name, tasks[i].name) == 0)
            return i;
    return -EINVAL;
}

int vl3_task_needs_question(int task)
{
    return task >= 0 && task < VL3_TASK_COUNT && tasks[task].needs_question;
}
