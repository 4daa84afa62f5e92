#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "runtime/text/chat_template.h"

using troupe::chat_message;
using troupe::chat_template_kind;

namespace {

// The chat templates of the real models (tokenizer_config.json / GGUF tokenizer.chat_template).
const std::string k_smollm2 =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n"
    "' + message['content'] + '<|im_end|>' + '\n"
    "'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n"
    "' }}{% endif %}";
const std::string k_qwen2 =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
const std::string k_qwen25 =
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n";
const std::string k_llama3 =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n"
    "\n"
    "'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n"
    "\n"
    "' }}{% endif %}";
const std::string k_llama31 =
    "{{- bos_token }}\n"
    "{%- if custom_tools is defined %}\n"
    "    {%- set tools = custom_tools %}\n"
    "{%- endif %}\n"
    "{%- if not tools_in_user_message is defined %}\n"
    "    {%- set tools_in_user_message = true %}\n"
    "{%- endif %}\n"
    "{%- if not date_string is defined %}\n"
    "    {%- set date_string = \"26 Jul 2024\" %}\n"
    "{%- endif %}\n"
    "{%- if not tools is defined %}\n"
    "    {%- set tools = none %}\n"
    "{%- endif %}\n"
    "\n"
    "{#- This block extracts the system message, so we can slot it into the right place. #}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = \"\" %}\n"
    "{%- endif %}\n"
    "\n"
    "{#- System message + builtin tools #}\n"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{%- if builtin_tools is defined or tools is not none %}\n"
    "    {{- \"Environment: ipython\\n\" }}\n"
    "{%- endif %}\n"
    "{%- if builtin_tools is defined %}\n"
    "    {{- \"Tools: \" + builtin_tools | reject('equalto', 'code_interpreter') | join(\", \") + \"\\n\\n\"}}\n"
    "{%- endif %}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
    "{%- if tools is not none and not tools_in_user_message %}\n"
    "    {{- \"You have access to the following functions. To call a function, please respond with JSON for a function call.\" }}\n"
    "{%- endif %}\n"
    "{{- system_message }}\n"
    "{{- \"<|eot_id|>\" }}\n"
    "\n"
    "{%- for message in messages %}\n"
    "    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n"
    "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n"
    "    {%- elif message.role == \"tool\" or message.role == \"ipython\" %}\n"
    "        {{- \"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}\n"
    "        {%- if message.content is mapping or message.content is iterable %}\n"
    "            {{- message.content | tojson }}\n"
    "        {%- else %}\n"
    "            {{- message.content }}\n"
    "        {%- endif %}\n"
    "        {{- \"<|eot_id|>\" }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n";
const std::string k_llama2 =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
const std::string k_mistral_v1 =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";
const std::string k_mistral_v1_sys =
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n";
const std::string k_mistral_v3 =
    "{%- if messages[0][\"role\"] == \"system\" %}\n"
    "    {%- set system_message = messages[0][\"content\"] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "{%- if not tools is defined %}\n"
    "    {%- set tools = none %}\n"
    "{%- endif %}\n"
    "{%- set user_messages = loop_messages | selectattr(\"role\", \"equalto\", \"user\") | list %}\n"
    "\n"
    "{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}\n"
    "{%- set ns = namespace() %}\n"
    "{%- set ns.index = 0 %}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if not (message.role == \"tool\" or message.role == \"tool_results\" or (message.tool_calls is defined and message.tool_calls is not none)) %}\n"
    "        {%- if (message[\"role\"] == \"user\") != (ns.index % 2 == 0) %}\n"
    "            {{- raise_exception(\"After the optional system message, conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "        {%- endif %}\n"
    "        {%- set ns.index = ns.index + 1 %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if message[\"role\"] == \"user\" %}\n"
    "        {%- if loop.last and system_message is defined %}\n"
    "            {{- \"[INST] \" + system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}\n"
    "        {%- else %}\n"
    "            {{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}\n"
    "        {%- endif %}\n"
    "    {%- elif message[\"role\"] == \"assistant\" %}\n"
    "        {{- \" \" + message[\"content\"]|trim + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception(\"Only user and assistant roles are supported, with the exception of an initial optional system message!\") }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n";
const std::string k_mistral_tekken =
    "{%- if messages[0][\"role\"] == \"system\" %}\n"
    "    {%- set system_message = messages[0][\"content\"] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "{%- if not tools is defined %}\n"
    "    {%- set tools = none %}\n"
    "{%- endif %}\n"
    "{%- set user_messages = loop_messages | selectattr(\"role\", \"equalto\", \"user\") | list %}\n"
    "\n"
    "{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}\n"
    "{%- set ns = namespace() %}\n"
    "{%- set ns.index = 0 %}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if not (message.role == \"tool\" or message.role == \"tool_results\" or (message.tool_calls is defined and message.tool_calls is not none)) %}\n"
    "        {%- if (message[\"role\"] == \"user\") != (ns.index % 2 == 0) %}\n"
    "            {{- raise_exception(\"After the optional system message, conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "        {%- endif %}\n"
    "        {%- set ns.index = ns.index + 1 %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if message[\"role\"] == \"user\" %}\n"
    "        {%- if loop.last and system_message is defined %}\n"
    "            {{- \"[INST]\" + system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}\n"
    "        {%- else %}\n"
    "            {{- \"[INST]\" + message[\"content\"] + \"[/INST]\" }}\n"
    "        {%- endif %}\n"
    "    {%- elif message[\"role\"] == \"assistant\" %}\n"
    "        {{- message[\"content\"] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception(\"Only user and assistant roles are supported, with the exception of an initial optional system message!\") }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n";
const std::string k_deepseek_r1 =
    "{% if not add_generation_prompt is defined -%}\n"
    "  {%- set add_generation_prompt = false -%}\n"
    "{%- endif -%}\n"
    "{%- set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='') -%}\n"
    "{%- for message in messages -%}\n"
    "  {%- if message['role'] == 'system' -%}\n"
    "    {%- set ns.system_prompt = message['content'] -%}\n"
    "  {%- endif -%}\n"
    "{%- endfor -%}{{bos_token}}{{ns.system_prompt}}\n"
    "{%- for message in messages -%}\n"
    "  {%- if message['role'] == 'user' -%}\n"
    "    {%- set ns.is_tool = false -%}{{'<\xEF\xBD\x9C""User\xEF\xBD\x9C"">' + message['content']}}\n"
    "  {%- endif -%}\n"
    "  {%- if message['role'] == 'assistant' and message['tool_calls'] -%}\n"
    "    {%- set ns.is_tool = false -%}\n"
    "    {{'<\xEF\xBD\x9C""tool\xE2\x96\x81""calls\xE2\x96\x81""end\xEF\xBD\x9C""><\xEF\xBD\x9C""end\xE2\x96\x81""of\xE2\x96\x81""sentence\xEF\xBD\x9C"">'}}\n"
    "  {%- endif -%}\n"
    "  {%- if message['role'] == 'assistant' and message['content'] is not none -%}\n"
    "    {%- if ns.is_tool -%}{{'<\xEF\xBD\x9C""tool\xE2\x96\x81""outputs\xE2\x96\x81""end\xEF\xBD\x9C"">' + message['content'] + '<\xEF\xBD\x9C""end\xE2\x96\x81""of\xE2\x96\x81""sentence\xEF\xBD\x9C"">'}}\n"
    "      {%- set ns.is_tool = false -%}\n"
    "    {%- else -%}\n"
    "      {%- set content = message['content'] -%}\n"
    "      {%- if '</think>' in content -%}\n"
    "        {%- set content = content.split('</think>')[-1] -%}\n"
    "      {%- endif -%}{{'<\xEF\xBD\x9C""Assistant\xEF\xBD\x9C"">' + content + '<\xEF\xBD\x9C""end\xE2\x96\x81""of\xE2\x96\x81""sentence\xEF\xBD\x9C"">'}}\n"
    "    {%- endif -%}\n"
    "  {%- endif -%}\n"
    "  {%- if message['role'] == 'tool' -%}\n"
    "    {%- set ns.is_tool = true -%}\n"
    "    {%- if ns.is_output_first -%}{{'<\xEF\xBD\x9C""tool\xE2\x96\x81""outputs\xE2\x96\x81""begin\xEF\xBD\x9C""><\xEF\xBD\x9C""tool\xE2\x96\x81""output\xE2\x96\x81""begin\xEF\xBD\x9C"">' + message['content'] + '<\xEF\xBD\x9C""tool\xE2\x96\x81""output\xE2\x96\x81""end\xEF\xBD\x9C"">'}}\n"
    "      {%- set ns.is_output_first = false -%}\n"
    "      {%- else -%}{{'\\n<\xEF\xBD\x9C""tool\xE2\x96\x81""output\xE2\x96\x81""begin\xEF\xBD\x9C"">' + message['content'] + '<\xEF\xBD\x9C""tool\xE2\x96\x81""output\xE2\x96\x81""end\xEF\xBD\x9C"">'}}\n"
    "    {%- endif -%}\n"
    "  {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if ns.is_tool -%}{{'<\xEF\xBD\x9C""tool\xE2\x96\x81""outputs\xE2\x96\x81""end\xEF\xBD\x9C"">'}}\n"
    "{%- endif -%}\n"
    "{%- if add_generation_prompt and not ns.is_tool -%}{{'<\xEF\xBD\x9C""Assistant\xEF\xBD\x9C""><think>\\n'}}\n"
    "{%- endif %}";

struct render_case {
  const char* name;
  const std::string& jinja;
  const char* bos;
  const char* eos;
  std::vector<chat_message> messages;
  bool add_generation_prompt;
  const char* expected;
};

// Generated from the real templates rendered by jinja2 (trim_blocks, lstrip_blocks), as transformers does.
const render_case k_render_cases[] = {
    {"SmolLM2 (ChatML) injects its default system prompt", k_smollm2, "<|im_start|>", "<|im_end|>", {{"user", "Hello"}, {"assistant", " Hi! "}, {"user", "Who are you?"}}, true,
     "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n Hi! <|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"},
    {"SmolLM2 (ChatML) keeps a given system prompt", k_smollm2, "<|im_start|>", "<|im_end|>", {{"system", "You are terse."}, {"user", "Hello"}, {"assistant", " Hi! "}, {"user", "Who are you?"}}, false,
     "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n Hi! <|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n"},
    {"Qwen2 injects 'You are a helpful assistant.'", k_qwen2, "<|endoftext|>", "<|im_end|>", {{"user", "Hello"}, {"assistant", " Hi! "}, {"user", "Who are you?"}}, true,
     "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n Hi! <|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"},
    {"Qwen2.5 injects 'You are Qwen, created by Alibaba Cloud.'", k_qwen25, "<|endoftext|>", "<|im_end|>", {{"user", "Hello"}, {"assistant", " Hi! "}, {"user", "Who are you?"}, {"tool", "42"}, {"tool", "43"}}, true,
     "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n Hi! <|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>user\n<tool_response>\n42\n</tool_response>\n<tool_response>\n43\n</tool_response><|im_end|>\n<|im_start|>assistant\n"},
    {"Llama 3 trims contents and starts with the BOS text", k_llama3, "<|begin_of_text|>", "<|eot_id|>", {{"system", "You are terse."}, {"user", "Hello"}, {"assistant", " Hi! "}, {"user", "Who are you?"}}, true,
     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
    {"Llama 3.1 always writes the knowledge-date system header", k_llama31, "<|begin_of_text|>", "<|eot_id|>", {{"system", "You are terse."}, {"user", "Hello"}, {"assistant", " Hi! "}, {"user", "Who are you?"}}, true,
     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
    {"Llama 2 wraps the system prompt in <<SYS>> inside the first [INST]", k_llama2, "<s>", "</s>", {{"system", "You are terse."}, {"user", "Hello"}, {"assistant", " Hi! "}, {"user", "Who are you?"}}, true,
     "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHello [/INST] Hi! </s><s>[INST] Who are you? [/INST]"},
    {"Mistral v0.2 (legacy) renders [INST] turns without a system role", k_mistral_v1, "<s>", "</s>", {{"user", "Hello"}, {"assistant", " Hi! "}, {"user", "Who are you?"}}, true,
     "<s>[INST] Hello [/INST] Hi! </s>[INST] Who are you? [/INST]"},
    {"Mistral v0.2 (v1) prepends the system prompt to the first user turn", k_mistral_v1_sys, "<s>", "</s>", {{"system", "You are terse."}, {"user", "Hello"}, {"assistant", " Hi! "}, {"user", "Who are you?"}}, true,
     "<s> [INST] You are terse.\n\nHello [/INST]  Hi! </s> [INST] Who are you? [/INST]"},
    {"Mistral v0.3 (v3) prepends the system prompt to the last user turn", k_mistral_v3, "<s>", "</s>", {{"system", "You are terse."}, {"user", "Hello"}, {"assistant", " Hi! "}, {"user", "Who are you?"}}, true,
     "<s>[INST] Hello[/INST] Hi!</s>[INST] You are terse.\n\nWho are you?[/INST]"},
    {"Mistral Nemo (v3-tekken) has no spaces around [INST]", k_mistral_tekken, "<s>", "</s>", {{"system", "You are terse."}, {"user", "Hello"}, {"assistant", " Hi! "}, {"user", "Who are you?"}}, true,
     "<s>[INST]Hello[/INST] Hi! </s>[INST]You are terse.\n\nWho are you?[/INST]"},
    {"DeepSeek-R1 drops reasoning from past turns and opens <think>", k_deepseek_r1, "<\xEF\xBD\x9C""begin\xE2\x96\x81""of\xE2\x96\x81""sentence\xEF\xBD\x9C"">", "<\xEF\xBD\x9C""end\xE2\x96\x81""of\xE2\x96\x81""sentence\xEF\xBD\x9C"">", {{"system", "Be careful."}, {"user", "Hi"}, {"assistant", "<think>hmm</think>\n\nHello!"}, {"user", "2+2?"}}, true,
     "<\xEF\xBD\x9C""begin\xE2\x96\x81""of\xE2\x96\x81""sentence\xEF\xBD\x9C"">Be careful.<\xEF\xBD\x9C""User\xEF\xBD\x9C"">Hi<\xEF\xBD\x9C""Assistant\xEF\xBD\x9C"">\n\nHello!<\xEF\xBD\x9C""end\xE2\x96\x81""of\xE2\x96\x81""sentence\xEF\xBD\x9C""><\xEF\xBD\x9C""User\xEF\xBD\x9C"">2+2?<\xEF\xBD\x9C""Assistant\xEF\xBD\x9C""><think>\n"},
};

troupe::tokenizer_data with_template(const std::string& jinja, const std::string& bos = "<s>",
                                     const std::string& eos = "</s>") {
  troupe::tokenizer_data d;
  d.tokens = {bos, eos};
  d.types = {troupe::token_type::control, troupe::token_type::control};
  d.bos_id = 0;
  d.eos_id = 1;
  d.chat_template = jinja;
  return d;
}

}  // namespace

TEST_CASE("each real template is recognised as its family", "[chat]") {
  CHECK(troupe::detect_chat_template(k_smollm2) == chat_template_kind::chatml);
  CHECK(troupe::detect_chat_template(k_qwen2) == chat_template_kind::chatml);
  CHECK(troupe::detect_chat_template(k_qwen25) == chat_template_kind::qwen2_5);
  CHECK(troupe::detect_chat_template(k_llama3) == chat_template_kind::llama3);
  CHECK(troupe::detect_chat_template(k_llama31) == chat_template_kind::llama3_1);
  CHECK(troupe::detect_chat_template(k_llama2) == chat_template_kind::llama2);
  CHECK(troupe::detect_chat_template(k_mistral_v1) == chat_template_kind::mistral_v1);
  CHECK(troupe::detect_chat_template(k_mistral_v1_sys) == chat_template_kind::mistral_v1_sys);
  CHECK(troupe::detect_chat_template(k_mistral_v3) == chat_template_kind::mistral_v3);
  CHECK(troupe::detect_chat_template(k_mistral_tekken) == chat_template_kind::mistral_v3_tekken);
  CHECK(troupe::detect_chat_template(k_deepseek_r1) == chat_template_kind::deepseek_r1);
  CHECK(std::string(troupe::chat_template_name(chat_template_kind::llama3)) == "llama3");
}

TEST_CASE("an unknown or empty chat template is an error, never a guess", "[chat]") {
  CHECK_THROWS_WITH(troupe::detect_chat_template(""), Catch::Contains("unknown chat template"));
  const std::string gemma =
      "{% for message in messages %}{{ '<start_of_turn>' + message['role'] + '\\n' + message['content'] | trim + "
      "'<end_of_turn>\\n' }}{% endfor %}";
  CHECK_THROWS_WITH(troupe::detect_chat_template(gemma), Catch::Contains("unknown chat template: {% for message"));
  CHECK_THROWS_WITH(troupe::apply_chat_template(with_template(gemma), {{"user", "hi"}}, true),
                    Catch::Contains("unknown chat template"));
}

TEST_CASE("every family renders byte for byte as its Jinja template does", "[chat]") {
  for (const auto& c : k_render_cases) {
    INFO(c.name);
    CHECK(troupe::apply_chat_template(with_template(c.jinja, c.bos, c.eos), c.messages, c.add_generation_prompt) ==
          c.expected);
  }
}

TEST_CASE("ChatML without a generation prompt ends after the last message", "[chat]") {
  const auto d = with_template(k_smollm2);
  CHECK(troupe::apply_chat_template(d, {{"system", "S"}, {"user", "U"}}, false) ==
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n");
}

TEST_CASE("DeepSeek-R1 without <think> in its template opens a plain assistant turn", "[chat]") {
  const std::string old = "{{bos_token}}{{'<\xEF\xBD\x9CUser\xEF\xBD\x9C>' + message['content']}}"
                          "{{'<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>'}}";
  CHECK(troupe::apply_chat_template(with_template(old, "<B>"), {{"user", "Hi"}}, true) ==
        "<B><\xEF\xBD\x9CUser\xEF\xBD\x9C>Hi<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>");
}

TEST_CASE("templates that raise on bad roles raise here too", "[chat]") {
  CHECK_THROWS_WITH(troupe::apply_chat_template(with_template(k_mistral_v1), {{"user", "U"}, {"system", "S"}}, true),
                    Catch::Contains("Only user and assistant roles are supported!"));
  CHECK_THROWS_WITH(troupe::apply_chat_template(with_template(k_llama2), {{"user", "a"}, {"user", "b"}}, true),
                    Catch::Contains("Conversation roles must alternate"));
  CHECK_THROWS_WITH(troupe::apply_chat_template(with_template(k_mistral_v3), {{"assistant", "a"}}, true),
                    Catch::Contains("must alternate"));
  CHECK_THROWS_WITH(troupe::apply_chat_template(with_template(k_smollm2), {}, true), Catch::Contains("no messages"));
}
