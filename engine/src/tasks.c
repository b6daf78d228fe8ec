/* tasks.c: the ONE place where the built-in task instruction texts live (documented in
 * docs/tasks.md). A task turns a request (caption, ocr, chart_qa, qa + optional question) into the
 * user instruction that follows the visual items in the chat template. Deployments override any
 * text through configuration (vl3_task_texts); templates may use {question} and {media}. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vl3/engine.h"

static const struct {
    const char *name;
    const char *text;
    int needs_question;
} tasks[VL3_TASK_COUNT] = {
    [VL3_TASK_CAPTION] = {"caption", "Describe this {media} in detail.", 0},
    [VL3_TASK_OCR] = {"ocr",
                      "Read all the text in this {media}. Output the text exactly as it appears, "
                      "one line per line of text.",
                      0},
    [VL3_TASK_CHART_QA] = {"chart_qa",
                           "{question}\nAnswer the question using a single word or phrase.", 1},
    [VL3_TASK_QA] = {"qa", "{question}", 1},
};

const char *vl3_task_name(enum vl3_task task)
{
    return (unsigned)task < VL3_TASK_COUNT ? tasks[task].name : "unknown";
}

int vl3_task_parse(const char *name)
{
    for (int i = 0; name && i < VL3_TASK_COUNT; i++)
        if (strcmp(name, tasks[i].name) == 0)
            return i;
    return -EINVAL;
}

const char *vl3_task_default_text(enum vl3_task task)
{
    return (unsigned)task < VL3_TASK_COUNT ? tasks[task].text : NULL;
}

int vl3_task_needs_question(enum vl3_task task)
{
    return (unsigned)task < VL3_TASK_COUNT && tasks[task].needs_question;
}

int vl3_task_instruction(enum vl3_task task, const vl3_task_texts *overrides, const char *question,
                         const char *media, char **ret, vl3_error *reterr)
{
    if ((unsigned)task >= VL3_TASK_COUNT || !ret)
        return vl3_error_set(reterr, -EINVAL, "unknown task %d", (int)task);
    const char *tmpl = overrides && overrides->text[task] ? overrides->text[task] : tasks[task].text;
    if (!media)
        media = "image";
    if (tasks[task].needs_question && (!question || !question[0]))
        return vl3_error_set(reterr, -EINVAL, "task \"%s\" needs a question", tasks[task].name);
    /* size: every placeholder replaced by the longer of its values */
    size_t qlen = question ? strlen(question) : 0, mlen = strlen(media);
    size_t cap = strlen(tmpl) + 1, n_ph = 0;
    for (const char *s = tmpl; (s = strchr(s, '{')); s++)
        n_ph++;
    cap += n_ph * (qlen > mlen ? qlen : mlen);
    char *out = malloc(cap), *o = out;
    if (!out)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    for (const char *s = tmpl; *s;) {
        if (strncmp(s, "{question}", 10) == 0) {
            if (!question) {
                free(out);
                return vl3_error_set(reterr, -EINVAL,
                                     "task \"%s\" text uses {question} but none was given",
                                     tasks[task].name);
            }
            memcpy(o, question, qlen);
            o += qlen;
            s += 10;
        } else if (strncmp(s, "{media}", 7) == 0) {
            memcpy(o, media, mlen);
            o += mlen;
            s += 7;
        } else {
            *o++ = *s++;
        }
    }
    *o = 0;
    *ret = out;
    return 0;
}
