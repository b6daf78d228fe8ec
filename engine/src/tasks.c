/* tasks.c: the ONE place where the built-in task instruction texts live (documented in
 * docs/tasks.md). A task turns a request (caption, ocr, chart_qa, qa + optional question) into the
 * user instruction that follows the visual items in the chat template. Deployments override any
 * text through configuration (vl3_task_texts); templates may use {question} and {media}. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vl3/engine.h"

/* instruction texts of the catalogue's tasks (vl3/tasks.h) */
static const char *const texts[VL3_TASK_COUNT] = {
    [VL3_TASK_CAPTION] = "Describe this {media} in detail.",
    [VL3_TASK_OCR] = ("Read all the text in this {media}. Output the text exactly as it appears, "
                      "one line per line of text."),
    [VL3_TASK_CHART_QA] = "{question}\nAnswer the question using a single word or phrase.",
    [VL3_TASK_QA] = "{question}",
};

const char *vl3_task_default_text(enum vl3_task task)
{
    return (unsigned)task < VL3_TASK_COUNT ? texts[task] : NULL;
}

int vl3_task_instruction(enum vl3_task task, const vl3_task_texts *overrides, const char *question,
                         const char *media, char **ret, vl3_error *reterr)
{
    if ((unsigned)task >= VL3_TASK_COUNT || !ret)
        return vl3_error_set(reterr, -EINVAL, "unknown task %d", (int)task);
    const char *tmpl = overrides && overrides->text[task] ? overrides->text[task] : texts[task];
    if (!media)
        media = "image";
    if (vl3_task_needs_question(task) && (!question || !question[0]))
        return vl3_error_set(reterr, -EINVAL, "task \"%s\" needs a question",
                             vl3_task_name(task));
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
                                     vl3_task_name(task));
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
